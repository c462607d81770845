//! Serving one virtio-blk request: header, data in the right direction, status byte.

use virtio_bindings::virtio_blk::{
    VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK, VIRTIO_BLK_S_UNSUPP, VIRTIO_BLK_T_DISCARD,
    VIRTIO_BLK_T_FLUSH, VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT,
    VIRTIO_BLK_T_WRITE_ZEROES,
};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::bounce::CHUNK;
use super::{Block, MAX_DISCARD_SECTORS, MAX_DISCARD_SEGMENTS, MAX_REQUEST_BYTES, SECTOR_SIZE};
use crate::chain_io::{split, ChainReader, ChainWriter};
use crate::queue::Segment;

const IOERR: u8 = VIRTIO_BLK_S_IOERR as u8;
const UNSUPP: u8 = VIRTIO_BLK_S_UNSUPP as u8;
const DISCARD_FLAG_UNMAP: u32 = 1;
const HEADER_LEN: usize = 16;
const DISCARD_SEGMENT_LEN: u64 = 16;
/// Guest buffers at least this aligned are handed to the disk in place.
const DIRECT_ALIGN: u64 = 4096;

/// Outcome of a request: `Err` carries the failure status byte.
type Status = Result<(), u8>;

impl Block {
    /// Serve the request in `segs`; returns the bytes written to the driver's buffers
    /// (data plus the status byte), or 0 when the chain has nowhere to put a status.
    pub(super) fn serve(&mut self, mem: &GuestMemoryMmap, segs: &[Segment]) -> u32 {
        let (readable, writable) = split(segs);
        let Some(last) = writable.last().copied() else {
            return 0;
        };
        // The status is the final device-writable byte; the rest is data.
        let status_addr = GuestAddress(last.addr.0 + u64::from(last.len) - 1);
        let data_len = writable.len() - usize::from(last.len == 1);
        let mut data = std::mem::take(&mut self.data_segs);
        data.clear();
        data.extend_from_slice(&writable[..data_len]);
        if last.len > 1 {
            if let Some(l) = data.last_mut() {
                l.len -= 1;
            }
        }
        let mut reader = ChainReader::new(mem, readable);
        let mut writer = ChainWriter::new(mem, &data);
        let status = match self.execute(&mut reader, &mut writer) {
            Ok(()) => VIRTIO_BLK_S_OK as u8,
            Err(status) => status,
        };
        let written = writer.written();
        self.data_segs = data;
        if mem.write_obj(status, status_addr).is_err() {
            return 0;
        }
        dirty_log::mark(status_addr.0, 1);
        // Bounded by MAX_REQUEST_BYTES (reads) or the 20-byte serial.
        u32::try_from(written + 1).unwrap_or(u32::MAX)
    }

    fn execute(&mut self, reader: &mut ChainReader, writer: &mut ChainWriter) -> Status {
        let mut header = [0u8; HEADER_LEN];
        reader.read_exact(&mut header).map_err(|_| IOERR)?;
        let request_type = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
        let sector = u64::from_le_bytes([
            header[8], header[9], header[10], header[11], header[12], header[13], header[14],
            header[15],
        ]);
        let read_only = self.disk.read_only();
        match request_type {
            VIRTIO_BLK_T_IN => {
                // Data must be device-writable only.
                if reader.remaining() != 0 {
                    return Err(IOERR);
                }
                let len = writer.remaining();
                let offset = self.data_range(sector, len)?;
                self.read_into(offset, len, writer)
            }
            VIRTIO_BLK_T_OUT => {
                if read_only || writer.remaining() != 0 {
                    return Err(IOERR);
                }
                let len = reader.remaining();
                let offset = self.data_range(sector, len)?;
                let result = self.write_from(offset, len, reader);
                self.mark_written(offset, len);
                result
            }
            VIRTIO_BLK_T_FLUSH => {
                if reader.remaining() != 0 || writer.remaining() != 0 {
                    return Err(IOERR);
                }
                if !self.honour_flush {
                    return Ok(());
                }
                self.disk.flush().map_err(|_| IOERR)
            }
            VIRTIO_BLK_T_GET_ID => {
                if reader.remaining() != 0 {
                    return Err(IOERR);
                }
                let n = (writer.remaining() as usize).min(self.serial.len());
                writer.write_all(&self.serial[..n]).map_err(|_| IOERR)
            }
            VIRTIO_BLK_T_DISCARD | VIRTIO_BLK_T_WRITE_ZEROES => {
                if read_only || writer.remaining() != 0 {
                    return Err(IOERR);
                }
                self.discard_or_zero(request_type == VIRTIO_BLK_T_DISCARD, reader)
            }
            _ => Err(UNSUPP),
        }
    }

    /// Byte offset of `len` bytes at `sector`, if they lie inside the disk.
    fn range(&self, sector: u64, len: u64) -> Result<u64, u8> {
        let offset = sector.checked_mul(SECTOR_SIZE).ok_or(IOERR)?;
        let end = offset.checked_add(len).ok_or(IOERR)?;
        if end > self.capacity_bytes {
            return Err(IOERR);
        }
        Ok(offset)
    }

    fn data_range(&self, sector: u64, len: u64) -> Result<u64, u8> {
        if !len.is_multiple_of(SECTOR_SIZE) || len > MAX_REQUEST_BYTES {
            return Err(IOERR);
        }
        self.range(sector, len)
    }

    fn read_into(&mut self, offset: u64, len: u64, writer: &mut ChainWriter) -> Status {
        // One contiguous, page-aligned guest buffer: read straight into it (no copy; fine
        // for O_DIRECT). Scattered buffers go through the aligned bounce buffer so the
        // disk still sees one large read per chunk.
        let disk = &mut self.disk;
        if let Some(result) =
            writer.fill_direct(len as usize, DIRECT_ALIGN, |buf| disk.read_at(buf, offset))
        {
            return result.map_err(|_| IOERR);
        }
        let mut done = 0u64;
        while done < len {
            let n = (len - done).min(CHUNK as u64) as usize;
            let buf = self.bounce.get(n);
            self.disk.read_at(buf, offset + done).map_err(|_| IOERR)?;
            writer.write_all(buf).map_err(|_| IOERR)?;
            done += n as u64;
        }
        Ok(())
    }

    fn write_from(&mut self, offset: u64, len: u64, reader: &mut ChainReader) -> Status {
        let disk = &mut self.disk;
        if let Some(result) =
            reader.consume_direct(len as usize, DIRECT_ALIGN, |buf| disk.write_at(buf, offset))
        {
            return result.map_err(|_| IOERR);
        }
        let mut done = 0u64;
        while done < len {
            let n = (len - done).min(CHUNK as u64) as usize;
            let buf = self.bounce.get(n);
            reader.read_exact(buf).map_err(|_| IOERR)?;
            self.disk.write_at(buf, offset + done).map_err(|_| IOERR)?;
            done += n as u64;
        }
        Ok(())
    }

    /// DISCARD / WRITE_ZEROES: every segment is checked before any is executed.
    fn discard_or_zero(&mut self, discard: bool, reader: &mut ChainReader) -> Status {
        let bytes = reader.remaining();
        let count = bytes / DISCARD_SEGMENT_LEN;
        if bytes == 0
            || !bytes.is_multiple_of(DISCARD_SEGMENT_LEN)
            || count > u64::from(MAX_DISCARD_SEGMENTS)
        {
            return Err(IOERR);
        }
        let mut ranges = [(0u64, 0u64); MAX_DISCARD_SEGMENTS as usize];
        for range in ranges.iter_mut().take(count as usize) {
            let mut raw = [0u8; DISCARD_SEGMENT_LEN as usize];
            reader.read_exact(&mut raw).map_err(|_| IOERR)?;
            let sector = u64::from_le_bytes([
                raw[0], raw[1], raw[2], raw[3], raw[4], raw[5], raw[6], raw[7],
            ]);
            let sectors = u32::from_le_bytes([raw[8], raw[9], raw[10], raw[11]]);
            let flags = u32::from_le_bytes([raw[12], raw[13], raw[14], raw[15]]);
            if flags & !DISCARD_FLAG_UNMAP != 0 || (discard && flags != 0) {
                return Err(UNSUPP);
            }
            if sectors > MAX_DISCARD_SECTORS {
                return Err(IOERR);
            }
            let len = u64::from(sectors) * SECTOR_SIZE;
            *range = (self.range(sector, len)?, len);
        }
        for &(offset, len) in ranges.iter().take(count as usize) {
            let result = if discard {
                self.disk.discard(offset, len)
            } else {
                self.disk.write_zeroes(offset, len)
            };
            self.mark_written(offset, len);
            result.map_err(|_| IOERR)?;
        }
        Ok(())
    }
}
