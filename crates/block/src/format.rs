use std::fmt;

/// Disk image formats vessel reads and writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    Raw,
    Qcow2,
    Vdi,
    /// VHD, called `vpc` by qemu-img.
    Vhd,
    Vmdk,
    Vhdx,
}

impl Format {
    /// The name users type (`--format`), also used in messages.
    pub fn name(self) -> &'static str {
        match self {
            Format::Raw => "raw",
            Format::Qcow2 => "qcow2",
            Format::Vdi => "vdi",
            Format::Vhd => "vhd",
            Format::Vmdk => "vmdk",
            Format::Vhdx => "vhdx",
        }
    }

    /// qemu-img's name for the format.
    pub fn qemu_name(self) -> &'static str {
        match self {
            Format::Vhd => "vpc",
            other => other.name(),
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Format {
    type Err = crate::Error;
    fn from_str(s: &str) -> crate::Result<Self> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "raw" => Format::Raw,
            "qcow2" => Format::Qcow2,
            "vdi" => Format::Vdi,
            "vhd" | "vpc" => Format::Vhd,
            "vmdk" => Format::Vmdk,
            "vhdx" => Format::Vhdx,
            other => {
                return Err(crate::Error::InvalidArgument(format!(
                    "unknown image format '{other}' (expected raw, qcow2, vdi, vhd, vmdk or vhdx)"
                )))
            }
        })
    }
}
