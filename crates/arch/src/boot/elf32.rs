//! Minimal, validating ELF32 reader for multiboot kernels: the entry point and the
//! loadable segments, nothing else.

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Elf32Error {
    #[error("not an ELF32 little-endian x86 executable")]
    NotElf32,
    #[error("program header table is outside the file")]
    BadProgramHeaders,
    #[error("segment {0} has file data outside the file")]
    BadSegment(usize),
    #[error("segment {0} has memsz smaller than filesz")]
    BadSegmentSize(usize),
    #[error("no loadable segments")]
    NoSegments,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    pub paddr: u64,
    pub file_offset: usize,
    pub file_size: u64,
    pub mem_size: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Elf32 {
    pub entry: u32,
    pub segments: Vec<Segment>,
}

const PT_LOAD: u32 = 1;
const EM_386: u16 = 3;
const MAX_PHDRS: usize = 64;

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    b.get(at..at + 2).map(|s| u16::from_le_bytes([s[0], s[1]]))
}
fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    b.get(at..at + 4)
        .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

/// Whether `image` starts with an ELF32 header.
pub fn is_elf32(image: &[u8]) -> bool {
    image.len() >= 52 && image[..4] == *b"\x7fELF" && image[4] == 1
}

pub fn parse(image: &[u8]) -> Result<Elf32, Elf32Error> {
    if !is_elf32(image) || image[5] != 1 || u16_at(image, 18) != Some(EM_386) {
        return Err(Elf32Error::NotElf32);
    }
    let entry = u32_at(image, 24).ok_or(Elf32Error::NotElf32)?;
    let phoff = u32_at(image, 28).ok_or(Elf32Error::NotElf32)? as usize;
    let phentsize = u16_at(image, 42).ok_or(Elf32Error::NotElf32)? as usize;
    let phnum = u16_at(image, 44).ok_or(Elf32Error::NotElf32)? as usize;
    if phentsize < 32 || phnum > MAX_PHDRS {
        return Err(Elf32Error::BadProgramHeaders);
    }
    let table_end = phoff
        .checked_add(phentsize * phnum)
        .ok_or(Elf32Error::BadProgramHeaders)?;
    if table_end > image.len() {
        return Err(Elf32Error::BadProgramHeaders);
    }
    let mut segments = Vec::new();
    for i in 0..phnum {
        let ph = phoff + i * phentsize;
        let field = |n: usize| u32_at(image, ph + 4 * n).unwrap_or(0);
        if field(0) != PT_LOAD {
            continue;
        }
        let (offset, paddr, filesz, memsz) = (field(1) as usize, field(3), field(4), field(5));
        if offset
            .checked_add(filesz as usize)
            .is_none_or(|end| end > image.len())
        {
            return Err(Elf32Error::BadSegment(i));
        }
        if memsz < filesz {
            return Err(Elf32Error::BadSegmentSize(i));
        }
        if memsz == 0 {
            continue;
        }
        segments.push(Segment {
            paddr: u64::from(paddr),
            file_offset: offset,
            file_size: u64::from(filesz),
            mem_size: u64::from(memsz),
        });
    }
    if segments.is_empty() {
        return Err(Elf32Error::NoSegments);
    }
    Ok(Elf32 { entry, segments })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An ELF32 image (entry 1 MiB) with these program headers, padded to 512 bytes.
    pub(crate) fn elf(phdrs: &[[u32; 8]]) -> Vec<u8> {
        let mut v = vec![0u8; 52];
        v[..7].copy_from_slice(b"\x7fELF\x01\x01\x01");
        v[18..20].copy_from_slice(&EM_386.to_le_bytes());
        v[24..28].copy_from_slice(&0x100000u32.to_le_bytes());
        v[28..32].copy_from_slice(&52u32.to_le_bytes());
        v[42..44].copy_from_slice(&32u16.to_le_bytes());
        v[44..46].copy_from_slice(&(phdrs.len() as u16).to_le_bytes());
        for p in phdrs {
            for f in p {
                v.extend_from_slice(&f.to_le_bytes());
            }
        }
        v.resize(0x200, 0);
        v
    }

    #[test]
    fn parses_load_segments() {
        let e = parse(&elf(&[
            [PT_LOAD, 0x100, 0x100000, 0x100000, 0x10, 0x20, 5, 4],
            [4, 0, 0, 0, 0, 0, 0, 0],
        ]))
        .unwrap();
        assert_eq!(e.entry, 0x100000);
        assert_eq!(
            e.segments,
            vec![Segment {
                paddr: 0x100000,
                file_offset: 0x100,
                file_size: 0x10,
                mem_size: 0x20
            }]
        );
    }

    #[test]
    fn rejects_bad_input() {
        assert_eq!(parse(b"junk"), Err(Elf32Error::NotElf32));
        assert_eq!(
            parse(&elf(&[[PT_LOAD, 0x1f8, 0, 0x100000, 0x10, 0x10, 0, 0]])),
            Err(Elf32Error::BadSegment(0))
        );
        assert_eq!(
            parse(&elf(&[[PT_LOAD, 0, 0, 0x100000, 0x10, 0x8, 0, 0]])),
            Err(Elf32Error::BadSegmentSize(0))
        );
        assert_eq!(parse(&elf(&[])), Err(Elf32Error::NoSegments));
        let mut e = elf(&[]);
        e[44..46].copy_from_slice(&1000u16.to_le_bytes());
        assert_eq!(parse(&e), Err(Elf32Error::BadProgramHeaders));
    }
}
