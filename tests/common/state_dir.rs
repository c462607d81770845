//! A vessel state directory of a test's own (`--state-dir`), and vessel commands run
//! against it. VMMs started there are killed when it goes out of scope.

use std::path::PathBuf;

use super::{out_dir, vessel, Run, TIMEOUT};

pub struct TestState(pub PathBuf);

impl TestState {
    /// A fresh, empty directory `state-NAME` under the tests' output directory.
    pub fn new(name: &str) -> Self {
        let dir = out_dir().join(format!("state-{name}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TestState(dir)
    }

    /// `vessel --state-dir DIR ARGS...`.
    pub fn vessel(&self, args: &[&str]) -> Run {
        let mut all = vec!["--state-dir", self.0.to_str().unwrap()];
        all.extend_from_slice(args);
        vessel(&all, TIMEOUT)
    }

    /// Run a command that must succeed; its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let r = self.vessel(args);
        assert_eq!(
            r.status,
            Some(0),
            "{args:?}\nstdout: {}\nstderr: {}",
            r.stdout,
            r.stderr
        );
        r.stdout
    }
}

/// The last `lines` lines of `path` (empty if it cannot be read).
fn tail(path: &std::path::Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

impl Drop for TestState {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // What each guest and VMM said last: the panic alone rarely tells why.
            for e in std::fs::read_dir(&self.0).into_iter().flatten().flatten() {
                for log in ["serial.log", "vmm.log"] {
                    let path = e.path().join(log);
                    if path.exists() {
                        eprintln!("--- {} (end) ---\n{}", path.display(), tail(&path, 60));
                    }
                }
            }
        }
        // Never leave VMMs behind, whatever the test did.
        for e in std::fs::read_dir(&self.0).into_iter().flatten().flatten() {
            if let Ok(pid) = std::fs::read_to_string(e.path().join("vmm.pid")) {
                if let Ok(pid) = pid.trim().parse::<i32>() {
                    // SAFETY: kill(2) takes plain integers and touches no memory of ours; best-effort
                    // kill of a VMM this test started.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
        }
    }
}
