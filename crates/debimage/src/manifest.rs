//! The build manifest: what went into an image and how to boot it, serializable to TOML and
//! JSON so a build can be checked and repeated.

use serde::{Deserialize, Serialize};

/// An installed Debian package and its exact version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Package {
    /// Binary package name (with `:arch` for foreign architectures).
    pub name: String,
    /// The installed version.
    pub version: String,
}

/// Everything recorded about one built image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// The image name, e.g. `debian-12`.
    pub image: String,
    /// The Debian suite (codename), e.g. `bookworm`.
    pub suite: String,
    /// The archive packages came from.
    pub mirror: String,
    /// The security archive, when one was used.
    pub security_mirror: Option<String>,
    /// The Linux kernel release installed, e.g. `6.1.0-35-cloud-amd64`.
    pub kernel_version: String,
    /// Kernel command line that boots the image directly (root by file system UUID).
    pub kernel_cmdline: String,
    /// UUID of the ext4 root file system (`/etc/fstab` mounts it as `UUID=`).
    pub fs_uuid: String,
    /// Unique GUID of the root partition (`root=PARTUUID=` also works).
    pub partition_uuid: String,
    /// GUID of the GPT disk.
    pub disk_guid: String,
    /// Size of the disk image in bytes.
    pub disk_size: u64,
    /// Byte offset of the root partition in the disk image.
    pub partition_offset: u64,
    /// Size of the root partition in bytes.
    pub partition_size: u64,
    /// SHA-256 of the whole disk image, lower-case hex.
    pub sha256: String,
    /// When the image was built (SOURCE_DATE_EPOCH when set), RFC 3339 UTC.
    pub build_date: String,
    /// SOURCE_DATE_EPOCH the build was pinned to, if any.
    pub source_date_epoch: Option<u64>,
    /// Every installed package with its version, sorted by name.
    pub packages: Vec<Package>,
}

impl Manifest {
    /// The manifest as TOML.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("a manifest always serializes to TOML")
    }

    /// The manifest as pretty-printed JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a manifest always serializes to JSON")
    }

    /// The version of an installed package.
    pub fn package_version(&self, name: &str) -> Option<&str> {
        self.packages
            .iter()
            .find(|p| p.name == name)
            .map(|p| p.version.as_str())
    }
}

/// The `dpkg-query -W -f` format that [`parse_dpkg_query`] reads.
pub const DPKG_QUERY_FORMAT: &str = "${db:Status-Abbrev}\t${binary:Package}\t${Version}\n";

/// Parse `dpkg-query -W -f DPKG_QUERY_FORMAT` output into the sorted list of installed
/// packages (status `ii`; removed packages with only config files left are not installed).
pub fn parse_dpkg_query(text: &str) -> Vec<Package> {
    let mut packages: Vec<Package> = text
        .lines()
        .filter_map(|line| {
            let mut fields = line.split('\t');
            let (status, name, version) = (fields.next()?, fields.next()?, fields.next()?);
            let (name, version) = (name.trim(), version.trim());
            let installed = status.trim() == "ii";
            (installed && !name.is_empty() && !version.is_empty()).then(|| Package {
                name: name.to_string(),
                version: version.to_string(),
            })
        })
        .collect();
    packages.sort_by(|a, b| a.name.cmp(&b.name));
    packages
}

/// Seconds since the Unix epoch as RFC 3339 UTC (`2025-05-20T00:00:00Z`).
pub fn rfc3339_utc(epoch: u64) -> String {
    let days = epoch / 86_400;
    let secs = epoch % 86_400;
    let (year, month, day) = civil_from_days(days as i64);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// Howard Hinnant's days-to-civil conversion (proleptic Gregorian calendar).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Manifest {
        Manifest {
            image: "debian-12".into(),
            suite: "bookworm".into(),
            mirror: "http://deb.debian.org/debian".into(),
            security_mirror: None,
            kernel_version: "6.1.0-35-cloud-amd64".into(),
            kernel_cmdline: "root=UUID=x ro console=ttyS0".into(),
            fs_uuid: "0b1d7a6c-1111-4222-8333-444455556666".into(),
            partition_uuid: "5e0c9a3e-aaaa-4bbb-8ccc-ddddeeeeffff".into(),
            disk_guid: "7f7f7f7f-0000-4000-8000-000000000001".into(),
            disk_size: 2 << 30,
            partition_offset: 1 << 20,
            partition_size: (2 << 30) - (2 << 20),
            sha256: "ab".repeat(32),
            build_date: rfc3339_utc(1_747_699_200),
            source_date_epoch: Some(1_747_699_200),
            packages: parse_dpkg_query("ii \tsudo\t1.9.13p3-1+deb12u1\nii \tbash\t5.2.15-2+b7\n"),
        }
    }

    #[test]
    fn dpkg_query_output_is_sorted_and_skips_junk() {
        let p = parse_dpkg_query(
            "ii \tzlib1g:amd64\t1:1.2.13\nii \tbash\t5.2\nrc \told\t1.0\nii \thalf\t\n\nbad\n",
        );
        assert_eq!(
            p,
            [
                Package {
                    name: "bash".into(),
                    version: "5.2".into()
                },
                Package {
                    name: "zlib1g:amd64".into(),
                    version: "1:1.2.13".into()
                },
            ]
        );
    }

    #[test]
    fn manifest_round_trips_through_toml_and_json() {
        let m = sample();
        let back: Manifest = toml::from_str(&m.to_toml()).unwrap();
        assert_eq!(back, m);
        let back: Manifest = serde_json::from_str(&m.to_json()).unwrap();
        assert_eq!(back, m);
        assert_eq!(m.package_version("sudo"), Some("1.9.13p3-1+deb12u1"));
        assert_eq!(m.package_version("vim"), None);
        assert!(m.to_toml().contains("suite = \"bookworm\""));
    }

    #[test]
    fn dates_are_rfc3339() {
        assert_eq!(rfc3339_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339_utc(1_747_699_200), "2025-05-20T00:00:00Z");
        assert_eq!(rfc3339_utc(951_827_696), "2000-02-29T12:34:56Z");
    }
}
