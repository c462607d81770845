//! Shared by the image tests: building the debian-12 image once per test binary, checking
//! for the tools (missing tools fail the tests when VESSEL_REQUIRE_TCG is set), extracting the
//! root partition and reading it with debugfs.

#![allow(dead_code)]

pub mod qemu;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use debimage::{BuildOptions, Manifest, Step};

/// A built image and what the tests need to look inside it.
#[derive(Debug)]
pub struct Built {
    /// The raw disk image.
    pub image: PathBuf,
    /// The root partition copied out of it (debugfs reads file systems, not disks).
    pub partition: PathBuf,
    /// What the build returned.
    pub manifest: Manifest,
    /// The steps reported, in order.
    pub steps: Vec<Step>,
    /// How long the build took.
    pub elapsed: Duration,
}

/// Whether the tools exist; when one does not, the test skips, or fails under
/// VESSEL_REQUIRE_TCG (set by scripts/test.sh, which installs them).
pub fn tools_present(extra: &[(&str, &str)]) -> bool {
    let mut missing: Vec<String> = debimage::TOOLS
        .iter()
        .filter(|t| t.find().is_err())
        .map(|t| format!("{} (apt-get install {})", t.name, t.package))
        .collect();
    for (tool, package) in extra {
        let found = Command::new("sh")
            .args([
                "-c",
                "command -v \"$1\" || test -x \"/usr/sbin/$1\" || test -x \"/sbin/$1\"",
                "sh",
                tool,
            ])
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            missing.push(format!("{tool} (apt-get install {package})"));
        }
    }
    if let Err(e) = debimage::preflight() {
        if missing.is_empty() {
            missing.push(e.to_string());
        }
    }
    if missing.is_empty() {
        return true;
    }
    assert!(
        std::env::var_os("VESSEL_REQUIRE_TCG").is_none(),
        "VESSEL_REQUIRE_TCG is set but the image build cannot run: {}",
        missing.join(", ")
    );
    eprintln!("skipping: missing {}", missing.join(", "));
    false
}

/// The image, built on first use (about two minutes) and shared by the binary's tests.
pub fn built() -> &'static Built {
    static BUILT: OnceLock<Result<Built, String>> = OnceLock::new();
    BUILT
        .get_or_init(build)
        .as_ref()
        .unwrap_or_else(|e| panic!("{e}"))
}

fn build() -> Result<Built, String> {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("debimage");
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let image = dir.join("debian-12.raw");
    // The default work directory (/dev/shm when it has room), as users get it.
    let opts = BuildOptions::new("debian-12");
    let mut steps = Vec::new();
    let start = Instant::now();
    let manifest = debimage::build(&opts, &image, &mut |s| {
        eprintln!("[{:>6.1}s] {s}", start.elapsed().as_secs_f64());
        steps.push(s);
    })
    .map_err(|e| format!("building debian-12 failed: {e}"))?;
    let elapsed = start.elapsed();
    eprintln!("built {} in {:.1}s", image.display(), elapsed.as_secs_f64());
    let partition = dir.join("root.ext4");
    extract_partition(&image, &manifest, &partition)?;
    Ok(Built {
        image,
        partition,
        manifest,
        steps,
        elapsed,
    })
}

/// Copy the root partition out of the disk with dd, keeping it sparse.
fn extract_partition(image: &Path, m: &Manifest, out: &Path) -> Result<(), String> {
    const MIB: u64 = 1 << 20;
    let output = Command::new("dd")
        .arg(format!("if={}", image.display()))
        .arg(format!("of={}", out.display()))
        .args(["bs=1M", "conv=sparse", "status=none"])
        .arg(format!("skip={}", m.partition_offset / MIB))
        .arg(format!("count={}", m.partition_size / MIB))
        .output()
        .map_err(|e| format!("dd: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "dd failed: {}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    Ok(())
}

/// Run one debugfs request on the extracted file system; stdout and stderr together.
pub fn debugfs(partition: &Path, request: &str) -> String {
    let out = Command::new(tool_path("debugfs"))
        .args(["-R", request])
        .arg(partition)
        .output()
        .expect("debugfs runs");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `debugfs -R "cat <path>"`.
pub fn cat(partition: &Path, path: &str) -> String {
    let out = Command::new(tool_path("debugfs"))
        .args(["-R", &format!("cat {path}")])
        .arg(partition)
        .output()
        .expect("debugfs runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Where an sbin tool is, even with an sbin-less PATH.
pub fn tool_path(name: &str) -> PathBuf {
    ["/usr/sbin", "/sbin", "/usr/bin", "/bin"]
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from(name))
}

/// Run a command and return its stdout, failing the test on error.
pub fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
