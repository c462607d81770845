//! Image names as users type them (`debian-12`) and the Debian suites they stand for.

use crate::error::{Error, Result};

/// The images this crate builds: user-facing name, Debian codename and release number.
const IMAGES: &[(&str, &str, u32)] = &[("debian-12", "bookworm", 12), ("debian-13", "trixie", 13)];

/// A Debian release that an image can be built from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Suite {
    /// The name users type, e.g. `debian-12`.
    pub image_name: &'static str,
    /// The Debian codename used by the archive, e.g. `bookworm`.
    pub codename: &'static str,
    /// The release number, e.g. 12.
    pub version: u32,
}

impl Suite {
    /// The suite for an image name (`debian-12`), a codename (`bookworm`) or `debian12`.
    pub fn from_name(name: &str) -> Result<Suite> {
        let wanted = name.trim().to_ascii_lowercase();
        IMAGES
            .iter()
            .find(|(image, codename, version)| {
                wanted == *image || wanted == *codename || wanted == format!("debian{version}")
            })
            .map(|&(image_name, codename, version)| Suite {
                image_name,
                codename,
                version,
            })
            .ok_or_else(|| Error::UnknownImage(name.to_string()))
    }

    /// Every suite this crate knows, oldest first.
    pub fn all() -> impl Iterator<Item = Suite> {
        IMAGES.iter().map(|&(image_name, codename, version)| Suite {
            image_name,
            codename,
            version,
        })
    }
}

/// The known image names, comma-separated, for error messages.
pub(crate) fn known_names() -> String {
    IMAGES
        .iter()
        .map(|(image, _, _)| *image)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_names_map_to_codenames() {
        assert_eq!(Suite::from_name("debian-12").unwrap().codename, "bookworm");
        assert_eq!(Suite::from_name("Debian-12").unwrap().codename, "bookworm");
        assert_eq!(Suite::from_name("bookworm").unwrap().version, 12);
        assert_eq!(
            Suite::from_name("debian12").unwrap().image_name,
            "debian-12"
        );
        assert_eq!(Suite::from_name("debian-13").unwrap().codename, "trixie");
    }

    #[test]
    fn unknown_names_list_the_known_ones() {
        let err = Suite::from_name("ubuntu-24.04").unwrap_err().to_string();
        assert!(err.contains("ubuntu-24.04"), "{err}");
        assert!(err.contains("debian-12"), "{err}");
        assert_eq!(Suite::all().count(), 2);
    }
}
