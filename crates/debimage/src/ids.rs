//! UUIDs for the file system, the partition and the disk: random from the kernel, or given by
//! the caller for a reproducible image.

use crate::error::{Error, IoContext, Result};

const KERNEL_UUID: &str = "/proc/sys/kernel/random/uuid";

/// A fresh random (version 4) UUID from the kernel, lower-case.
pub fn random_uuid() -> Result<String> {
    Ok(std::fs::read_to_string(KERNEL_UUID)
        .at(KERNEL_UUID)?
        .trim()
        .to_ascii_lowercase())
}

/// `uuid` lower-cased when it is in the 8-4-4-4-12 hex form, else an error naming `what`.
pub fn checked_uuid(uuid: &str, what: &str) -> Result<String> {
    let groups: Vec<&str> = uuid.split('-').collect();
    let lengths_ok = groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12]);
    if lengths_ok
        && groups
            .iter()
            .all(|g| g.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        Ok(uuid.to_ascii_lowercase())
    } else {
        Err(Error::InvalidOption(format!(
            "{what} {uuid:?} is not a UUID"
        )))
    }
}

/// The given UUID (checked) or a random one.
pub fn given_or_random(given: Option<&str>, what: &str) -> Result<String> {
    match given {
        Some(uuid) => checked_uuid(uuid, what),
        None => random_uuid(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_uuids_are_valid_and_differ() {
        let a = random_uuid().unwrap();
        let b = random_uuid().unwrap();
        assert_ne!(a, b);
        assert_eq!(checked_uuid(&a, "x").unwrap(), a);
    }

    #[test]
    fn uuids_are_checked() {
        assert_eq!(
            checked_uuid("0B1D7A6C-1111-4222-8333-444455556666", "fs").unwrap(),
            "0b1d7a6c-1111-4222-8333-444455556666"
        );
        for bad in [
            "",
            "0b1d7a6c-1111-4222-8333-44445555666",
            "0b1d7a6c11114222833344445555666g",
        ] {
            let err = checked_uuid(bad, "fs UUID").unwrap_err().to_string();
            assert!(err.starts_with("fs UUID"), "{err}");
        }
    }
}
