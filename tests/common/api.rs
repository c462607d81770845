//! Talking to a VMM's REST API socket the way Firecracker's users do: with curl.

use std::path::Path;
use std::process::Command;

/// `curl --unix-socket SOCK -X METHOD http://localhost PATH [-d BODY]`: (HTTP status, body).
pub fn curl(sock: &Path, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "-o", "-", "-w", "\n%{http_code}", "--unix-socket"])
        .arg(sock);
    cmd.args(["-X", method, &format!("http://localhost{path}")]);
    if let Some(b) = body {
        cmd.args(["-H", "Content-Type: application/json", "-d", b]);
    }
    let out = cmd.output().expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// `vessel run --api-sock` with its serial console in a file, killed when dropped.
pub struct ApiVmm {
    pub child: std::process::Child,
    pub sock: std::path::PathBuf,
    pub serial: std::path::PathBuf,
}

impl Drop for ApiVmm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl ApiVmm {
    /// Start a VMM named `name` (its socket and serial log in the output directory, fresh)
    /// with `extra` arguments, and wait until its API socket is there.
    pub fn spawn(name: &str, extra: &[String]) -> ApiVmm {
        Self::spawn_with_env(name, extra, &[])
    }

    /// [`ApiVmm::spawn`] with `env` (name, value) added to the VMM's environment.
    pub fn spawn_with_env(name: &str, extra: &[String], env: &[(&str, &str)]) -> ApiVmm {
        use std::process::Stdio;
        let sock = super::out_dir().join(format!("{name}.sock"));
        let serial = super::out_dir().join(format!("{name}-serial.log"));
        let _ = std::fs::remove_file(&serial);
        let _ = std::fs::remove_file(&sock);
        let child = Command::new(env!("CARGO_BIN_EXE_vessel"))
            .args(["run", "--api-sock", sock.to_str().unwrap(), "--serial"])
            .arg(format!("file:{}", serial.display()))
            .args(extra)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let vmm = ApiVmm {
            child,
            sock,
            serial,
        };
        super::wait_for("the API socket", || vmm.sock.exists());
        vmm
    }

    pub fn call(&self, method: &str, path: &str, body: &str) -> (u16, String) {
        curl(&self.sock, method, path, Some(body))
    }

    pub fn serial(&self) -> String {
        std::fs::read_to_string(&self.serial).unwrap_or_default()
    }

    /// Wait (at most `timeout`) for the VMM to exit: its exit code and stderr.
    pub fn wait_exit(&mut self, timeout: std::time::Duration) -> (Option<i32>, String) {
        let start = std::time::Instant::now();
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            assert!(start.elapsed() < timeout, "the VMM did not exit");
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        let mut err = String::new();
        use std::io::Read;
        let _ = self.child.stderr.take().unwrap().read_to_string(&mut err);
        (status.code(), err)
    }
}
