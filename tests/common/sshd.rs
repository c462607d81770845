//! A real OpenSSH server for a test (`/usr/sbin/sshd` from openssh-server, on a free port of
//! 127.0.0.1, in the foreground), with its own host key, one authorized client key for the
//! current user and a known_hosts file naming its host key: what `ssh -o` options a client
//! needs to reach it are in [`Sshd::options`]. Killed when dropped.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use super::out_dir;

pub struct Sshd {
    child: Child,
    pub port: u16,
    /// The user the client logs in as (the tests' own).
    pub user: String,
    /// `-o` options (KEY=VALUE) that log in with the authorized key and check the host key.
    pub options: Vec<String>,
    /// The same with a key the server does not know.
    pub stranger_options: Vec<String>,
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn keygen(path: &std::path::Path) {
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(path)
        .output()
        .expect("run ssh-keygen (openssh-client)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap()
}

impl Sshd {
    pub fn start(name: &str) -> Sshd {
        let sshd = PathBuf::from("/usr/sbin/sshd");
        assert!(
            sshd.exists(),
            "no {} (scripts/test.sh installs openssh-server)",
            sshd.display()
        );
        let dir = out_dir().join(format!("sshd-{name}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for key in ["host_key", "client_key", "stranger_key"] {
            keygen(&dir.join(key));
        }
        std::fs::copy(dir.join("client_key.pub"), dir.join("authorized_keys")).unwrap();
        let port = free_port();
        let config = dir.join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nAuthorizedKeysFile {}\n\
                 PidFile none\nStrictModes no\nUsePAM no\nPasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\n\
                 AllowStreamLocalForwarding yes\nLogLevel ERROR\n",
                dir.join("host_key").display(),
                dir.join("authorized_keys").display(),
            ),
        )
        .unwrap();
        // Its privilege separation directory, needed when it runs as root.
        let _ = std::fs::create_dir_all("/run/sshd");
        let child = Command::new(&sshd)
            .args(["-D", "-e", "-f"])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start sshd");
        let host_key = std::fs::read_to_string(dir.join("host_key.pub")).unwrap();
        let known_hosts = dir.join("known_hosts");
        std::fs::write(&known_hosts, format!("[127.0.0.1]:{port} {host_key}")).unwrap();
        let user = String::from_utf8(Command::new("id").arg("-un").output().unwrap().stdout)
            .unwrap()
            .trim()
            .to_string();
        let with_key = |key: &str| {
            vec![
                format!("IdentityFile={}", dir.join(key).display()),
                "IdentitiesOnly=yes".to_string(),
                format!("UserKnownHostsFile={}", known_hosts.display()),
                "GlobalKnownHostsFile=/dev/null".to_string(),
                "StrictHostKeyChecking=yes".to_string(),
            ]
        };
        let server = Sshd {
            child,
            port,
            user,
            options: with_key("client_key"),
            stranger_options: with_key("stranger_key"),
        };
        super::wait_for("sshd to listen", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        server
    }
}
