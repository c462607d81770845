//! Finding and running the external programs of a build (mmdebstrap, mkfs.ext4, sgdisk,
//! dpkg-query), with errors that say which package to install and what the tool printed.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use crate::error::{Error, Result};

/// Lines of standard error kept in [`Error::ToolFailed`].
const STDERR_TAIL_LINES: usize = 25;

/// A program the build runs and the Debian package that ships it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tool {
    /// The executable's name.
    pub name: &'static str,
    /// The Debian package to install for it.
    pub package: &'static str,
}

/// mmdebstrap, which installs Debian packages into a directory.
pub const MMDEBSTRAP: Tool = Tool {
    name: "mmdebstrap",
    package: "mmdebstrap",
};
/// mkfs.ext4, which builds the root file system from the directory.
pub const MKFS_EXT4: Tool = Tool {
    name: "mkfs.ext4",
    package: "e2fsprogs",
};
/// sgdisk, which writes the GPT partition table.
pub const SGDISK: Tool = Tool {
    name: "sgdisk",
    package: "gdisk",
};
/// dpkg-query, which lists the installed packages for the manifest.
pub const DPKG_QUERY: Tool = Tool {
    name: "dpkg-query",
    package: "dpkg",
};

/// Every tool a build needs.
pub const ALL: &[Tool] = &[MMDEBSTRAP, MKFS_EXT4, SGDISK, DPKG_QUERY];

impl Tool {
    /// The full path of the program: `$PATH`, then the sbin directories (which a non-login
    /// root shell may lack in `$PATH`).
    pub fn find(&self) -> Result<PathBuf> {
        let path = std::env::var_os("PATH").unwrap_or_default();
        std::env::split_paths(&path)
            .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
            .map(|dir| dir.join(self.name))
            .find(|candidate| is_executable(candidate))
            .ok_or_else(|| Error::ToolMissing {
                tool: self.name.to_string(),
                package: self.package.to_string(),
            })
    }

    /// A command running this tool.
    pub fn command(&self) -> Result<Command> {
        Ok(Command::new(self.find()?))
    }
}

fn is_executable(path: &std::path::Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Check that every tool of a build is installed, naming the first missing one.
pub fn check_all() -> Result<()> {
    ALL.iter().try_for_each(|tool| tool.find().map(drop))
}

/// Run `cmd` to completion with captured output; a failure carries the stderr tail.
pub fn run(tool: Tool, cmd: &mut Command) -> Result<Output> {
    let output = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|source| match source.kind() {
            std::io::ErrorKind::NotFound => Error::ToolMissing {
                tool: tool.name.to_string(),
                package: tool.package.to_string(),
            },
            _ => Error::Io {
                path: tool.name.into(),
                source,
            },
        })?;
    if output.status.success() {
        return Ok(output);
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let text = if stderr.trim().is_empty() {
        String::from_utf8_lossy(&output.stdout)
    } else {
        stderr
    };
    Err(Error::ToolFailed {
        tool: tool.name.to_string(),
        status: output.status.to_string(),
        stderr_tail: tail(&text, STDERR_TAIL_LINES),
    })
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.trim_end().lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_the_last_lines() {
        assert_eq!(tail("a\nb\nc\n", 2), "b\nc");
        assert_eq!(tail("a\n", 5), "a");
        assert_eq!(tail("", 3), "");
    }

    #[test]
    fn missing_tool_names_its_package() {
        let tool = Tool {
            name: "vessel-no-such-tool",
            package: "vessel-pkg",
        };
        let err = tool.find().unwrap_err().to_string();
        assert_eq!(
            err,
            "vessel-no-such-tool is not installed (apt-get install vessel-pkg)"
        );
    }

    #[test]
    fn failures_carry_the_stderr_tail() {
        let tool = Tool {
            name: "sh",
            package: "dash",
        };
        let err = run(
            tool,
            Command::new("sh").args(["-c", "echo one >&2; echo two >&2; exit 3"]),
        )
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("sh failed (exit status: 3)"), "{err}");
        assert!(err.ends_with("one\ntwo"), "{err}");
    }
}
