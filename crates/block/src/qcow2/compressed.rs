//! Compressed clusters: descriptor decoding and raw-deflate decompression.

use miniz_oxide::inflate::core::{decompress, inflate_flags, DecompressorOxide};

/// Host byte range `(offset, len)` of the compressed data described by L2 entry `entry`.
pub(crate) fn compressed_range(entry: u64, cluster_bits: u32) -> (u64, u64) {
    let x = 62 - (cluster_bits - 8);
    let offset = entry & ((1u64 << x) - 1);
    let sectors = ((entry >> x) & ((1u64 << (cluster_bits - 8)) - 1)) + 1;
    (offset, sectors * 512 - (offset & 511))
}

/// Inflate raw deflate `input` into `out`; true when it produced exactly a full cluster.
pub(crate) fn inflate_cluster(input: &[u8], out: &mut [u8]) -> bool {
    let mut state = Box::<DecompressorOxide>::default();
    let flags = inflate_flags::TINFL_FLAG_USING_NON_WRAPPING_OUTPUT_BUF;
    let (_, _, written) = decompress(&mut state, input, out, 0, flags);
    written == out.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptor_fields() {
        // 64 KiB clusters: offset in bits 0..54, extra sectors in bits 54..62.
        let entry = (1u64 << 62) | (3u64 << 54) | 0x10_0200;
        assert_eq!(compressed_range(entry, 16), (0x10_0200, 4 * 512));
        let entry = (1u64 << 62) | 0x10_0010;
        assert_eq!(compressed_range(entry, 16), (0x10_0010, 512 - 16));
    }

    #[test]
    fn inflates_raw_deflate_and_rejects_garbage() {
        let data: Vec<u8> = (0..4096u32).map(|i| (i % 7) as u8).collect();
        let packed = miniz_oxide::deflate::compress_to_vec(&data, 6);
        let mut out = vec![0u8; 4096];
        assert!(inflate_cluster(&packed, &mut out));
        assert_eq!(out, data);
        let mut out = vec![0u8; 4096];
        assert!(!inflate_cluster(&[0xff; 64], &mut out));
        assert!(!inflate_cluster(&packed[..packed.len() / 2], &mut out));
    }
}
