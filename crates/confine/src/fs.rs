//! Landlock: after set-up the VMM may open only the VM's own files (boot files, disks,
//! logs, its state and snapshot directories, network switch directories). Descriptors
//! opened during set-up keep working; landlock governs new opens, creations and removals.
//! On a kernel without landlock the VMM warns and runs unrestricted.

use std::path::{Path, PathBuf};

use landlock::{
    Access, AccessFs, PathBeneath, PathFd, Ruleset, RulesetAttr, RulesetCreatedAttr, RulesetStatus,
    ABI,
};

/// The newest landlock ABI vessel knows; older kernels get what they support.
const ABI_VERSION: ABI = ABI::V5;

#[derive(Debug, thiserror::Error)]
pub enum FsError {
    #[error("landlock: cannot open {path} to allow it: {source}")]
    Path {
        path: PathBuf,
        #[source]
        source: landlock::PathFdError,
    },
    #[error("landlock: {0}")]
    Ruleset(#[from] landlock::RulesetError),
}

/// What stays reachable: `read` paths (files, or directories and what is beneath) for
/// reading, `write` paths for everything (reading, writing, creating and removing beneath),
/// `remove_dir` directories only for removing directories in them (a run directory that
/// goes when the VM ends).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FsRules {
    pub read: Vec<PathBuf>,
    pub write: Vec<PathBuf>,
    pub remove_dir: Vec<PathBuf>,
}

impl FsRules {
    pub fn allow_read(&mut self, path: impl AsRef<Path>) {
        self.read.push(path.as_ref().to_path_buf());
    }

    pub fn allow_write(&mut self, path: impl AsRef<Path>) {
        self.write.push(path.as_ref().to_path_buf());
    }
}

/// Whether landlock enforced the rules on this thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enforced {
    Fully,
    Partially,
    /// The kernel has no landlock (a warning was printed).
    No,
}

fn rule(
    path: &Path,
    dir_access: landlock::BitFlags<AccessFs>,
) -> Result<PathBeneath<PathFd>, FsError> {
    let fd = PathFd::new(path).map_err(|source| FsError::Path {
        path: path.to_path_buf(),
        source,
    })?;
    // Rights that only mean something for directories must not be asked for a file.
    let access = if path.is_dir() {
        dir_access
    } else {
        dir_access & AccessFs::from_file(ABI_VERSION)
    };
    Ok(PathBeneath::new(fd, access))
}

/// Restrict the calling thread (and the threads it starts afterwards) to `rules`.
pub fn restrict_thread(rules: &FsRules) -> Result<Enforced, FsError> {
    enforce(prepare(rules)?)
}

/// A ruleset whose paths are open, ready for [`enforce`]: made before a user switch, while
/// the paths can still be opened.
pub struct Prepared(landlock::RulesetCreated);

/// Open `rules`' paths into a ruleset.
pub fn prepare(rules: &FsRules) -> Result<Prepared, FsError> {
    let all = AccessFs::from_all(ABI_VERSION);
    let mut ruleset = Ruleset::default().handle_access(all)?.create()?;
    for path in &rules.read {
        ruleset = ruleset.add_rule(rule(path, AccessFs::from_read(ABI_VERSION))?)?;
    }
    for path in &rules.write {
        ruleset = ruleset.add_rule(rule(path, all)?)?;
    }
    for path in &rules.remove_dir {
        ruleset = ruleset.add_rule(rule(path, AccessFs::RemoveDir.into())?)?;
    }
    Ok(Prepared(ruleset))
}

/// Restrict the calling thread (and the threads it starts afterwards) to a prepared ruleset.
pub fn enforce(prepared: Prepared) -> Result<Enforced, FsError> {
    let status = prepared.0.restrict_self()?;
    Ok(match status.ruleset {
        RulesetStatus::FullyEnforced => Enforced::Fully,
        RulesetStatus::PartiallyEnforced => Enforced::Partially,
        RulesetStatus::NotEnforced => {
            eprintln!(
                "vessel: warning: this kernel has no landlock; the VMM's filesystem access is not limited"
            );
            Enforced::No
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restricted_thread_opens_only_what_it_was_given() {
        let dir = tempfile::tempdir().unwrap();
        let allowed = dir.path().join("allowed");
        let ro = dir.path().join("ro");
        let other = dir.path().join("other");
        std::fs::create_dir(&allowed).unwrap();
        std::fs::write(&ro, b"r").unwrap();
        std::fs::write(&other, b"o").unwrap();
        let (a, r, o) = (allowed.clone(), ro.clone(), other.clone());
        std::thread::spawn(move || {
            let mut rules = FsRules::default();
            rules.allow_write(&a);
            rules.allow_read(&r);
            if restrict_thread(&rules).unwrap() == Enforced::No {
                return;
            }
            std::fs::write(a.join("new"), b"n").unwrap();
            assert!(std::fs::read(&r).is_ok());
            assert!(std::fs::OpenOptions::new().append(true).open(&r).is_err());
            let e = std::fs::read(&o).unwrap_err();
            assert_eq!(e.kind(), std::io::ErrorKind::PermissionDenied);
        })
        .join()
        .unwrap();
        // Other threads are not affected.
        assert!(std::fs::read(&other).is_ok());
    }

    #[test]
    fn a_missing_path_is_an_error() {
        let rules = FsRules {
            read: vec!["/nonexistent/vessel-landlock".into()],
            ..FsRules::default()
        };
        let r = std::thread::spawn(move || restrict_thread(&rules).map(|_| ()))
            .join()
            .unwrap();
        assert!(matches!(r, Err(FsError::Path { .. })));
    }
}
