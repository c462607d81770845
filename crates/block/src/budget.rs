//! The memory budget for the metadata tables of one backing chain.
//!
//! Each driver caps its own tables (qcow2 L1 and refcount tables, VHD and VHDX BATs,
//! VDI block maps, VMDK grain directories), but a chain of [`crate::MAX_CHAIN_DEPTH`]
//! hostile images could still ask for all of them at once. Tables read while a chain
//! opens are charged here; past [`CHAIN_METADATA_BUDGET`] the open fails with
//! [`Error::MetadataBudget`]. The budget lives as long as the outermost `open` call on
//! this thread (drivers open their backing files recursively on the same thread).

use std::cell::Cell;
use std::path::Path;

use crate::{Error, Result};

/// Most bytes of metadata tables that one chain (the image and its backing files) may
/// hold in memory.
pub const CHAIN_METADATA_BUDGET: u64 = 1 << 30;

thread_local! {
    /// Nesting depth of `open` calls on this thread.
    static DEPTH: Cell<usize> = const { Cell::new(0) };
    /// Table bytes charged by the chain being opened.
    static USED: Cell<u64> = const { Cell::new(0) };
    /// The budget (changed only by tests).
    static LIMIT: Cell<u64> = const { Cell::new(CHAIN_METADATA_BUDGET) };
}

/// Ends one level of chain opening; the outermost level frees the budget.
pub(crate) struct ChainBudget;

/// Called at the start of every `open`: the outermost call starts a new budget.
pub(crate) fn enter() -> ChainBudget {
    let depth = DEPTH.get();
    if depth == 0 {
        USED.set(0);
    }
    DEPTH.set(depth + 1);
    ChainBudget
}

impl Drop for ChainBudget {
    fn drop(&mut self) {
        let depth = DEPTH.get().saturating_sub(1);
        DEPTH.set(depth);
        if depth == 0 {
            USED.set(0);
        }
    }
}

/// Charge `bytes` of the table `what` of the image at `path` to the chain being opened,
/// before allocating it.
pub(crate) fn charge(path: &Path, what: &str, bytes: u64) -> Result<()> {
    let (used, limit) = (USED.get(), LIMIT.get());
    if used.saturating_add(bytes) > limit {
        return Err(Error::MetadataBudget {
            path: path.to_path_buf(),
            what: what.to_string(),
            bytes,
            used,
            limit,
        });
    }
    if DEPTH.get() > 0 {
        USED.set(used + bytes);
    }
    Ok(())
}

/// Run `f` with a budget of `limit` bytes on this thread.
#[cfg(test)]
pub(crate) fn with_limit<T>(limit: u64, f: impl FnOnce() -> T) -> T {
    let old = LIMIT.replace(limit);
    let out = f();
    LIMIT.set(old);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{create, open, CreateOptions, Format, OpenOptions};

    fn qcow2(path: &Path, backing: Option<&Path>) {
        let opts = CreateOptions {
            backing: backing.map(|b| (b.to_path_buf(), Some(Format::Qcow2))),
            ..Default::default()
        };
        create(path, Format::Qcow2, 1 << 30, &opts).unwrap();
    }

    #[test]
    fn a_chain_over_budget_is_refused_and_the_budget_is_per_open() {
        let dir = tempfile::tempdir().unwrap();
        let (base, mid, top) = (
            dir.path().join("base.qcow2"),
            dir.path().join("mid.qcow2"),
            dir.path().join("top.qcow2"),
        );
        qcow2(&base, None);
        qcow2(&mid, Some(&base));
        qcow2(&top, Some(&mid));
        // The test names its backing files by absolute path.
        let ro = OpenOptions {
            read_only: true,
            format: None,
            allow_external_backing: true,
        };
        // What one image of the chain charges (L1 and refcount tables).
        let one = {
            let _chain = enter();
            open(&base, &ro).unwrap();
            USED.get()
        };
        assert!(one > 0);
        // Room for two images: the three-image chain is refused with a clear error, and
        // each open starts from an empty budget.
        with_limit(2 * one + one / 2, || {
            let err = open(&top, &ro).err().expect("chain over budget opened");
            assert!(matches!(err, Error::MetadataBudget { .. }), "{err}");
            let msg = err.to_string();
            assert!(msg.contains("base.qcow2"), "{msg}");
            assert!(msg.contains("backing chain"), "{msg}");
            assert!(open(&mid, &ro).is_ok());
            assert!(open(&mid, &ro).is_ok());
        });
        assert!(open(&top, &ro).is_ok());
        assert_eq!((DEPTH.get(), USED.get()), (0, 0));
    }

    #[test]
    fn one_table_larger_than_the_budget_is_refused_outside_a_chain() {
        with_limit(100, || {
            assert!(charge(Path::new("x"), "BAT", 101).is_err());
            assert!(charge(Path::new("x"), "BAT", 100).is_ok());
            assert!(charge(Path::new("x"), "BAT", 100).is_ok());
        });
    }
}
