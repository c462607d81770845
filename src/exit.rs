//! vessel's exit statuses: one scheme for every command (docs/vm-definition.md, "Exit
//! status"), and the mapping from an error to its status.

// 0: the command did what was asked. `run` (and a background VM's VMM) exits with the
// guest's status instead: 0 when it powered off or reset, 4 when it faulted
// (devices::vm_exit::FAULT_EXIT_CODE), (code << 1) | 1 for an isa-debug-exit write.
/// The command failed while doing it (I/O, a tool it runs, a VM that would not start...).
pub const FAILURE: i32 = 1;
/// The command was refused because of what was asked: bad arguments or definition, an
/// unknown VM or image, a name already taken, a missing file, a VM in the wrong state.
pub const USAGE: i32 = 2;
/// `vessel disk check` found corruption.
pub const CORRUPT: i32 = 3;
/// The host cannot run the VM (KVM missing, out of memory...).
pub const HOST_ERROR: i32 = 6;

/// An error that comes from what the user asked (exit status [`USAGE`]).
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// A [`UsageError`] as an `anyhow` error.
pub fn usage(msg: impl Into<String>) -> anyhow::Error {
    UsageError(msg.into()).into()
}

/// The exit status for an error: [`USAGE`] when it (or a cause) is the user's, else
/// [`FAILURE`].
pub fn code(err: &anyhow::Error) -> i32 {
    for cause in err.chain() {
        if cause.downcast_ref::<UsageError>().is_some()
            || cause
                .downcast_ref::<crate::vmdef::DefinitionErrors>()
                .is_some()
        {
            return USAGE;
        }
        if let Some(e) = cause.downcast_ref::<images::StoreError>() {
            use images::StoreError as S;
            return match e {
                S::InvalidName(_)
                | S::NotFound(_)
                | S::Exists(_)
                | S::InUse { .. }
                | S::NotAFile(_)
                | S::HasBacking(_)
                | S::SplitVmdk(_)
                | S::NotBootable { .. } => USAGE,
                _ => FAILURE,
            };
        }
        if let Some(e) = cause.downcast_ref::<block::Error>() {
            return match e {
                block::Error::InvalidArgument(_)
                | block::Error::OutOfRange { .. }
                | block::Error::Unsupported { .. }
                | block::Error::ExternalReference { .. }
                | block::Error::Symlink { .. }
                | block::Error::NotAnImage { .. }
                | block::Error::ReadOnly => USAGE,
                block::Error::Io { source, .. } => io_code(source),
                _ => FAILURE,
            };
        }
    }
    FAILURE
}

fn io_code(e: &std::io::Error) -> i32 {
    match e.kind() {
        std::io::ErrorKind::NotFound
        | std::io::ErrorKind::AlreadyExists
        | std::io::ErrorKind::PermissionDenied
        | std::io::ErrorKind::IsADirectory => USAGE,
        _ => FAILURE,
    }
}

/// The error and its causes, skipping causes the message before already spells out.
pub fn message(err: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if !out.ends_with(&text) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&text);
        }
    }
    out
}

/// Print a command's error on stderr and turn the outcome into an exit status.
pub fn finish(result: anyhow::Result<i32>) -> i32 {
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("vessel: error: {}", message(&e));
            code(&e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_mistakes_are_2_and_the_rest_1() {
        assert_eq!(code(&usage("bad")), USAGE);
        assert_eq!(code(&usage("bad").context("while creating")), USAGE);
        assert_eq!(code(&anyhow::anyhow!("disk full")), FAILURE);
        let missing = std::io::Error::from(std::io::ErrorKind::NotFound);
        assert_eq!(io_code(&missing), USAGE);
        assert_eq!(
            devices::vm_exit::FAULT_EXIT_CODE,
            4,
            "docs/vm-definition.md says 4"
        );
    }
}
