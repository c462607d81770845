//! virtio-balloon (virtio 1.2 §5.5), the device model: inflate/deflate queues that give
//! guest pages back to the host (madvise), the statistics queue and free page reporting.
//!
//! Guest page frame numbers are hostile input: every one is range-checked against guest
//! memory before the host touches the mapping; bad ones are skipped and logged.

use std::collections::BTreeMap;

use vm_memory::{
    GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion, GuestRegionMmap,
};

mod control;
mod dynamic;
mod persist;
mod timer;

pub use control::{BalloonError, BalloonHandle, BalloonReport};
pub use dynamic::{DynamicMemory, DynamicPolicy, MAX_BUFFER_PERCENT};
pub use persist::{BalloonState, BALLOON_STATE_VERSION};

use crate::chain_io::{split, ChainReader};
use crate::device::VirtioDevice;
use crate::drain::drain;
use crate::processor::lock;
use crate::queue::{Queue, QueueError, Segment};

/// Queue size of every balloon queue.
pub const QUEUE_SIZE: u16 = 256;
/// The balloon's page size: PFNs in the inflate/deflate queues count 4 KiB pages.
pub const BALLOON_PAGE_SIZE: u64 = 4096;
pub const DEVICE_TYPE_BALLOON: u16 = 5;
/// VIRTIO_BALLOON_F_STATS_VQ.
pub const F_STATS_VQ: u64 = 1 << 1;
/// VIRTIO_BALLOON_F_DEFLATE_ON_OOM.
pub const F_DEFLATE_ON_OOM: u64 = 1 << 2;
/// VIRTIO_BALLOON_F_REPORTING.
pub const F_REPORTING: u64 = 1 << 5;
/// Size of one statistics entry (le16 tag, le64 value).
const STAT_ENTRY_LEN: usize = 10;
/// Most statistics entries read from one buffer (virtio 1.2 defines 16 tags).
pub(crate) const STAT_TAGS_MAX: usize = 64;
/// Config space: le32 num_pages, le32 actual.
const CONFIG_LEN: usize = 8;

/// What the user configures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BalloonConfig {
    /// Target balloon size in MiB.
    pub amount_mib: u32,
    pub deflate_on_oom: bool,
    /// 0 disables the statistics queue.
    pub stats_polling_interval_s: u16,
    pub free_page_reporting: bool,
    /// The target follows the guest's use ([`dynamic`]); needs statistics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dynamic: Option<DynamicMemory>,
}

/// What a queue of this device is for (indices depend on the offered features).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum QueueRole {
    Inflate,
    Deflate,
    Stats,
    Reporting,
}

/// Returns guest pages to the host.
fn discard_range(mem: &GuestMemoryMmap, addr: GuestAddress, len: u64) -> bool {
    // madvise wants page-aligned ranges; a hostile unaligned report is refused up front.
    if len == 0
        || !addr.0.is_multiple_of(BALLOON_PAGE_SIZE)
        || !len.is_multiple_of(BALLOON_PAGE_SIZE)
    {
        return false;
    }
    let Some(region) = mem.find_region(addr) else {
        return false;
    };
    let Some(offset) = addr.0.checked_sub(region.start_addr().0) else {
        return false;
    };
    let Some(end) = offset.checked_add(len) else {
        return false;
    };
    if end > region.len() {
        return false;
    }
    let discarded = discard_in_region(region, offset, len);
    // The pages read as zeros now: a migration copying memory must send them again.
    dirty_log::mark(addr.0, len);
    discarded
}

fn discard_in_region(region: &GuestRegionMmap, offset: u64, len: u64) -> bool {
    let Ok(host) = region.get_host_address(vm_memory::MemoryRegionAddress(offset)) else {
        return false;
    };
    let Ok(len) = usize::try_from(len) else {
        return false;
    };
    let from_file = region.file_offset().is_some();
    if from_file && region.flags() & libc::MAP_PRIVATE != 0 {
        return zero_private_file_pages(host, len);
    }
    // Shared file-backed memory (memfd) keeps its pages with MADV_DONTNEED; punch them.
    let advice = if from_file {
        libc::MADV_REMOVE
    } else {
        libc::MADV_DONTNEED
    };
    // SAFETY: `host..host+len` lies inside one mapped guest memory region (checked by the
    // caller against the region's length). Discarding guest pages only changes guest-visible
    // contents to zero, which the guest asked for by giving the pages away.
    let rc = unsafe { libc::madvise(host.cast(), len, advice) };
    if rc != 0 {
        tracing::warn!(
            error = %std::io::Error::last_os_error(),
            "balloon: madvise failed"
        );
        return false;
    }
    true
}

/// Guest memory mapped copy-on-write from a snapshot's memory file: MADV_DONTNEED would
/// bring the file's old pages back, so fresh anonymous zero pages are mapped over the range.
fn zero_private_file_pages(host: *mut u8, len: usize) -> bool {
    // SAFETY: `host..host+len` lies inside one mapped guest memory region (checked by the
    // caller), which stays mapped for as long as guest memory lives; MAP_FIXED replaces
    // just those pages with the same protection, so the region's mapping stays whole.
    // Only guest-visible contents change, to zero, as the guest asked.
    let addr = unsafe {
        libc::mmap(
            host.cast(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_FIXED | libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if addr == libc::MAP_FAILED {
        tracing::warn!(
            error = %std::io::Error::last_os_error(),
            "balloon: mapping zero pages failed"
        );
        return false;
    }
    true
}

/// Guest statistics by tag (virtio 1.2 §5.5.6.3), last values reported.
pub type BalloonStats = BTreeMap<u16, u64>;

/// Parse a statistics buffer: whole 10-byte entries; a trailing partial entry is ignored.
pub fn parse_stats(bytes: &[u8]) -> BalloonStats {
    bytes
        .chunks_exact(STAT_ENTRY_LEN)
        .map(|e| {
            let tag = u16::from_le_bytes([e[0], e[1]]);
            let mut v = [0u8; 8];
            v.copy_from_slice(&e[2..10]);
            (tag, u64::from_le_bytes(v))
        })
        .collect()
}

/// A memory balloon.
pub struct Balloon {
    handle: BalloonHandle,
    queue_sizes: Vec<u16>,
    roles: Vec<QueueRole>,
    /// The stats buffer the driver handed over; returned to ask for fresh statistics.
    held_stats_head: Option<u16>,
    segs: Vec<Segment>,
    /// Dynamic memory's state, when it is on.
    policy: Option<DynamicPolicy>,
    /// The device changed its target itself; the transport tells the driver.
    config_changed: bool,
}

impl Balloon {
    /// The device and the handle that controls it from other threads.
    pub fn new(config: BalloonConfig) -> Result<(Self, BalloonHandle), BalloonError> {
        let handle = BalloonHandle::new(config)?;
        Ok((Self::with_handle(handle.clone()), handle))
    }

    pub(crate) fn with_handle(handle: BalloonHandle) -> Self {
        let config = handle.features;
        let mut roles = vec![QueueRole::Inflate, QueueRole::Deflate];
        if config.stats_polling_interval_s > 0 {
            roles.push(QueueRole::Stats);
        }
        if config.free_page_reporting {
            roles.push(QueueRole::Reporting);
        }
        Self {
            handle,
            queue_sizes: vec![QUEUE_SIZE; roles.len()],
            roles,
            held_stats_head: None,
            segs: Vec::new(),
            policy: config.dynamic.map(DynamicPolicy::new),
            config_changed: false,
        }
    }

    /// A handle on this device for other threads.
    pub fn handle(&self) -> BalloonHandle {
        self.handle.clone()
    }

    /// The statistics timer the I/O thread polls (its expiry runs the device's queues).
    pub fn backend_fd(&self) -> Option<std::os::fd::RawFd> {
        self.handle.timer_fd()
    }

    /// Return the held statistics buffer so the driver refreshes it (the polling timer
    /// does this). Returns whether a buffer was returned (the caller interrupts).
    pub fn request_stats(
        &mut self,
        queue: &mut Queue,
        mem: &GuestMemoryMmap,
    ) -> Result<bool, QueueError> {
        match self.held_stats_head.take() {
            Some(head) => {
                queue.add_used(mem, head, 0)?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Inflate: discard every in-range page named by the chain's PFN array.
    fn serve_inflate(
        mem: &GuestMemoryMmap,
        segs: &[Segment],
        discarded: &mut u64,
        rejected: &mut u64,
    ) {
        let (readable, _) = split(segs);
        let mut reader = ChainReader::new(mem, readable);
        let mut pfn = [0u8; 4];
        while reader.read_exact(&mut pfn).is_ok() {
            let pfn = u64::from(u32::from_le_bytes(pfn));
            let addr = GuestAddress(pfn * BALLOON_PAGE_SIZE);
            if discard_range(mem, addr, BALLOON_PAGE_SIZE) {
                *discarded += 1;
            } else {
                *rejected += 1;
            }
        }
    }

    /// Free page reporting: each buffer is a free range of guest memory. Linux's driver
    /// adds them device-writable (`virtqueue_add_inbuf`; QEMU reads them as such); the
    /// device writes nothing to them, and device-readable ones are not reports.
    fn serve_reporting(mem: &GuestMemoryMmap, segs: &[Segment], discarded: &mut u64) {
        for seg in segs.iter().filter(|s| s.writable) {
            if discard_range(mem, seg.addr, u64::from(seg.len)) {
                *discarded += u64::from(seg.len) / BALLOON_PAGE_SIZE;
            }
        }
    }

    /// Read the driver's statistics buffer and keep its head for the next request.
    fn serve_stats(
        &mut self,
        queue: &mut Queue,
        mem: &GuestMemoryMmap,
    ) -> Result<bool, QueueError> {
        // Bounded like `drain`: a guest re-offering buffers cannot keep the thread here.
        for _ in 0..QUEUE_SIZE {
            let Some(head) = queue.pop(mem)? else {
                if queue.enable_notification(mem)? {
                    continue;
                }
                return Ok(false);
            };
            // A second buffer while one is held: give the old one back.
            if let Some(old) = self.held_stats_head.take() {
                queue.add_used(mem, old, 0)?;
            }
            if queue.read_chain(mem, head, &mut self.segs).is_ok() {
                let (readable, _) = split(&self.segs);
                let mut reader = ChainReader::new(mem, readable);
                let len = usize::try_from(reader.remaining())
                    .unwrap_or(usize::MAX)
                    .min(STAT_ENTRY_LEN * STAT_TAGS_MAX);
                let mut buf = vec![0u8; len];
                if reader.read_exact(&mut buf).is_ok() {
                    lock(&self.handle.status).stats = parse_stats(&buf);
                    self.apply_policy(mem);
                }
            }
            self.held_stats_head = Some(head);
        }
        Ok(true)
    }

    /// Dynamic memory: a new target from the statistics just read, when it should change.
    fn apply_policy(&mut self, mem: &GuestMemoryMmap) {
        let Some(policy) = self.policy.as_mut() else {
            return;
        };
        let ram_bytes: u64 = mem.iter().map(|r| r.len()).sum();
        let ram_mib = u32::try_from(ram_bytes >> 20).unwrap_or(u32::MAX);
        let mut status = lock(&self.handle.status);
        let target = pages_to_mib(status.target_pages);
        if let Some(next) = policy.next_target(&status.stats, ram_mib, target, status.interval_s) {
            tracing::debug!(from_mib = target, to_mib = next, "balloon: dynamic memory");
            status.target_pages = mib_to_pages(next);
            self.config_changed = true;
        }
    }

    /// The statistics queue: new buffers from the driver, then a buffer back when the
    /// polling timer expired.
    fn process_stats(
        &mut self,
        queue: &mut Queue,
        mem: &GuestMemoryMmap,
    ) -> Result<bool, QueueError> {
        let more = self.serve_stats(queue, mem)?;
        let due = self.handle.timer.as_ref().is_some_and(|t| t.take_expired());
        if due {
            self.request_stats(queue, mem)?;
        }
        Ok(more)
    }
}

/// 4 KiB pages per MiB.
const PAGES_PER_MIB: u32 = ((1 << 20) / BALLOON_PAGE_SIZE) as u32;

pub(crate) fn mib_to_pages(mib: u32) -> u32 {
    mib.saturating_mul(PAGES_PER_MIB)
}

pub(crate) fn pages_to_mib(pages: u32) -> u32 {
    pages / PAGES_PER_MIB
}

impl VirtioDevice for Balloon {
    fn device_type(&self) -> u16 {
        DEVICE_TYPE_BALLOON
    }
    fn pci_class(&self) -> (u8, u8) {
        (0x05, 0x00)
    }
    fn queue_max_sizes(&self) -> &[u16] {
        &self.queue_sizes
    }
    fn features(&self) -> u64 {
        let config = &self.handle.features;
        let mut f = 0;
        if config.stats_polling_interval_s > 0 {
            f |= F_STATS_VQ;
        }
        if config.deflate_on_oom {
            f |= F_DEFLATE_ON_OOM;
        }
        if config.free_page_reporting {
            f |= F_REPORTING;
        }
        f
    }
    fn config_len(&self) -> usize {
        CONFIG_LEN
    }
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        let mut cfg = [0u8; CONFIG_LEN];
        {
            let status = lock(&self.handle.status);
            cfg[..4].copy_from_slice(&status.target_pages.to_le_bytes());
            cfg[4..].copy_from_slice(&status.actual_pages.to_le_bytes());
        }
        data.fill(0);
        let start = usize::try_from(offset)
            .unwrap_or(CONFIG_LEN)
            .min(CONFIG_LEN);
        let n = data.len().min(CONFIG_LEN - start);
        data[..n].copy_from_slice(&cfg[start..start + n]);
    }
    fn write_config(&mut self, offset: u64, data: &[u8]) {
        // Only `actual` (bytes 4..8) is driver-writable; a whole-field write only.
        if offset == 4 && data.len() == 4 {
            lock(&self.handle.status).actual_pages =
                u32::from_le_bytes([data[0], data[1], data[2], data[3]]);
        }
    }
    fn save_state(&self) -> crate::DeviceState {
        crate::DeviceState::Balloon(crate::Persist::save(self))
    }
    fn reset(&mut self) {
        lock(&self.handle.status).actual_pages = 0;
        self.held_stats_head = None;
        self.config_changed = false;
    }
    fn take_config_change(&mut self) -> bool {
        std::mem::take(&mut self.config_changed)
    }
    fn process_queue(
        &mut self,
        index: usize,
        queue: &mut Queue,
        mem: &GuestMemoryMmap,
    ) -> Result<bool, QueueError> {
        let Some(role) = self.roles.get(index).copied() else {
            return Ok(false);
        };
        let (mut discarded, mut rejected) = (0, 0);
        let outcome = match role {
            QueueRole::Inflate => drain(queue, mem, &mut self.segs, |mem, chain| {
                if let Ok(segs) = chain {
                    Self::serve_inflate(mem, segs, &mut discarded, &mut rejected);
                }
                0
            }),
            // Deflated pages fault back in on the guest's next touch: nothing to do.
            QueueRole::Deflate => drain(queue, mem, &mut self.segs, |_, _| 0),
            QueueRole::Reporting => drain(queue, mem, &mut self.segs, |mem, chain| {
                if let Ok(segs) = chain {
                    Self::serve_reporting(mem, segs, &mut discarded);
                }
                0
            }),
            QueueRole::Stats => self.process_stats(queue, mem),
        };
        if discarded > 0 || rejected > 0 {
            let mut status = lock(&self.handle.status);
            status.discarded_pages = status.discarded_pages.saturating_add(discarded);
            status.rejected_pfns = status.rejected_pfns.saturating_add(rejected);
        }
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::Bytes;

    fn mem() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap()
    }

    fn cfg() -> BalloonConfig {
        BalloonConfig {
            amount_mib: 64,
            deflate_on_oom: true,
            stats_polling_interval_s: 1,
            free_page_reporting: true,
            dynamic: None,
        }
    }

    #[test]
    fn features_and_queues_follow_config() {
        let (b, _) = Balloon::new(cfg()).unwrap();
        assert_eq!(b.features(), F_STATS_VQ | F_DEFLATE_ON_OOM | F_REPORTING);
        assert_eq!(b.queue_max_sizes().len(), 4);
        let (b, _) = Balloon::new(BalloonConfig {
            stats_polling_interval_s: 0,
            free_page_reporting: false,
            deflate_on_oom: false,
            ..cfg()
        })
        .unwrap();
        assert_eq!(b.features(), 0);
        assert_eq!(b.queue_max_sizes().len(), 2);
    }

    #[test]
    fn config_space_reads_target_and_takes_actual() {
        let (mut b, h) = Balloon::new(cfg()).unwrap();
        let mut d = [0u8; 4];
        b.read_config(0, &mut d);
        assert_eq!(u32::from_le_bytes(d), 64 * 256);
        h.set_target_mib(100);
        b.read_config(0, &mut d);
        assert_eq!(u32::from_le_bytes(d), 100 * 256);
        b.write_config(4, &(256u32 * 3).to_le_bytes());
        assert_eq!(h.report().actual_mib(), 3);
        // Out-of-range and partial accesses neither panic nor change state.
        b.read_config(u64::MAX, &mut d);
        assert_eq!(d, [0; 4]);
        b.write_config(0, &[1, 2, 3, 4]);
        b.write_config(5, &[1]);
        assert_eq!(h.report().actual_mib(), 3);
    }

    #[test]
    fn discard_zeroes_in_range_pages_and_refuses_others() {
        let m = mem();
        m.write_obj(0xdead_beef_u32, GuestAddress(0x3000)).unwrap();
        assert!(discard_range(&m, GuestAddress(0x3000), BALLOON_PAGE_SIZE));
        assert_eq!(m.read_obj::<u32>(GuestAddress(0x3000)).unwrap(), 0);
        assert!(!discard_range(&m, GuestAddress(1 << 20), BALLOON_PAGE_SIZE));
        assert!(!discard_range(&m, GuestAddress((1 << 20) - 4096), 8192));
        assert!(!discard_range(&m, GuestAddress(u64::MAX - 10), u64::MAX));
        assert!(!discard_range(&m, GuestAddress(0x3001), BALLOON_PAGE_SIZE));
        assert!(!discard_range(&m, GuestAddress(0x3000), 100));
    }

    #[test]
    fn discard_of_memory_mapped_private_from_a_file_reads_zero_not_the_file() {
        use std::io::Write;
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(&[0xaa; 0x4000]).unwrap();
        let mapping = vm_memory::mmap::MmapRegion::build(
            Some(vm_memory::FileOffset::new(file, 0)),
            0x4000,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE,
        )
        .unwrap();
        let region = GuestRegionMmap::new(mapping, GuestAddress(0)).unwrap();
        let m = GuestMemoryMmap::from_regions(vec![region]).unwrap();
        m.write_obj(0x1234_u32, GuestAddress(0x1000)).unwrap();
        assert!(discard_range(
            &m,
            GuestAddress(0x1000),
            2 * BALLOON_PAGE_SIZE
        ));
        assert_eq!(m.read_obj::<u32>(GuestAddress(0x1000)).unwrap(), 0);
        assert_eq!(m.read_obj::<u32>(GuestAddress(0x2ffc)).unwrap(), 0);
        // Pages outside the range keep the file's contents, and the region works on.
        assert_eq!(
            m.read_obj::<u32>(GuestAddress(0x3000)).unwrap(),
            0xaaaa_aaaa
        );
        m.write_obj(7_u32, GuestAddress(0x1000)).unwrap();
        assert_eq!(m.read_obj::<u32>(GuestAddress(0x1000)).unwrap(), 7);
    }

    #[test]
    fn reported_ranges_are_the_device_writable_buffers_as_linux_adds_them() {
        let m = mem();
        for at in [0x4000u64, 0x6000, 0x9000] {
            m.write_obj(0x5a5a_u32, GuestAddress(at)).unwrap();
        }
        let segs = [
            Segment {
                addr: GuestAddress(0x4000),
                len: 0x3000,
                writable: true,
            },
            // Not a report: left alone.
            Segment {
                addr: GuestAddress(0x9000),
                len: 0x1000,
                writable: false,
            },
            // Hostile: past the end of memory, unaligned.
            Segment {
                addr: GuestAddress(1 << 20),
                len: 0x1000,
                writable: true,
            },
            Segment {
                addr: GuestAddress(0x9001),
                len: 0x1000,
                writable: true,
            },
        ];
        let mut discarded = 0;
        Balloon::serve_reporting(&m, &segs, &mut discarded);
        assert_eq!(discarded, 3);
        assert_eq!(m.read_obj::<u32>(GuestAddress(0x4000)).unwrap(), 0);
        assert_eq!(m.read_obj::<u32>(GuestAddress(0x6000)).unwrap(), 0);
        assert_eq!(m.read_obj::<u32>(GuestAddress(0x9000)).unwrap(), 0x5a5a);
    }

    #[test]
    fn inflate_counts_hostile_pfns() {
        let m = mem();
        let pfns: Vec<u8> = [3u32, 255, 256, u32::MAX]
            .iter()
            .flat_map(|p| p.to_le_bytes())
            .collect();
        m.write_slice(&pfns, GuestAddress(0x8000)).unwrap();
        let segs = [Segment {
            addr: GuestAddress(0x8000),
            len: pfns.len() as u32 + 2, // a trailing partial PFN is ignored
            writable: false,
        }];
        let (mut d, mut r) = (0, 0);
        Balloon::serve_inflate(&m, &segs, &mut d, &mut r);
        assert_eq!((d, r), (2, 2));
    }

    /// One chain of one device-readable buffer at 0x8000 on an 8-entry queue at 0x1000.
    fn queue_with_buffer(m: &GuestMemoryMmap, len: u32) -> Queue {
        let mut desc = [0u8; 16];
        desc[0..8].copy_from_slice(&0x8000u64.to_le_bytes());
        desc[8..12].copy_from_slice(&len.to_le_bytes());
        m.write_slice(&desc, GuestAddress(0x1000)).unwrap();
        m.write_obj(0u16, GuestAddress(0x2004)).unwrap();
        m.write_obj(1u16, GuestAddress(0x2002)).unwrap();
        m.write_obj(0u16, GuestAddress(0x3002)).unwrap();
        let layout = crate::QueueLayout {
            size: 8,
            desc: 0x1000,
            avail: 0x2000,
            used: 0x3000,
        };
        Queue::new(m, layout, false, false).unwrap()
    }

    #[test]
    fn inflate_queue_discards_and_stats_buffer_is_held() {
        let m = mem();
        m.write_obj(7u32, GuestAddress(0x5000)).unwrap();
        let pfns: Vec<u8> = [5u32, 0x10_0000]
            .iter()
            .flat_map(|p| p.to_le_bytes())
            .collect();
        m.write_slice(&pfns, GuestAddress(0x8000)).unwrap();
        let (mut b, h) = Balloon::new(cfg()).unwrap();
        let mut q = queue_with_buffer(&m, 8);
        assert!(!b.process_queue(0, &mut q, &m).unwrap());
        let r = h.report();
        assert_eq!((r.discarded_pages, r.rejected_pfns), (1, 1));
        assert_eq!(m.read_obj::<u32>(GuestAddress(0x5000)).unwrap(), 0);
        assert_eq!(m.read_obj::<u16>(GuestAddress(0x3002)).unwrap(), 1);

        let mut stat = 6u16.to_le_bytes().to_vec();
        stat.extend_from_slice(&99u64.to_le_bytes());
        m.write_slice(&stat, GuestAddress(0x8000)).unwrap();
        let mut q = queue_with_buffer(&m, 10);
        b.process_queue(2, &mut q, &m).unwrap();
        assert_eq!(h.report().stats[&6], 99);
        // Held until the poll asks for fresh statistics.
        assert_eq!(m.read_obj::<u16>(GuestAddress(0x3002)).unwrap(), 0);
        assert!(b.request_stats(&mut q, &m).unwrap());
        assert_eq!(m.read_obj::<u16>(GuestAddress(0x3002)).unwrap(), 1);
        assert!(!b.request_stats(&mut q, &m).unwrap());
        // A queue index the device does not have is ignored.
        assert!(!b.process_queue(9, &mut q, &m).unwrap());
    }

    /// A 64 MiB guest reports that it uses 60 MiB with the balloon at 32: the device
    /// empties the balloon and asks the transport to tell the driver.
    #[test]
    fn dynamic_memory_moves_the_target_from_the_guests_statistics() {
        let m = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 64 << 20)]).unwrap();
        let (mut b, h) = Balloon::new(BalloonConfig {
            amount_mib: 32,
            dynamic: Some(DynamicMemory {
                min_mib: 16,
                buffer_percent: 10,
                shrink_delay_s: 60,
            }),
            ..cfg()
        })
        .unwrap();
        let mut stat = Vec::new();
        for (tag, mib) in [(5u16, 62u64), (6, 2)] {
            stat.extend_from_slice(&tag.to_le_bytes());
            stat.extend_from_slice(&(mib << 20).to_le_bytes());
        }
        m.write_slice(&stat, GuestAddress(0x8000)).unwrap();
        assert!(!b.take_config_change());
        let mut q = queue_with_buffer(&m, stat.len() as u32);
        b.process_queue(2, &mut q, &m).unwrap();
        assert_eq!(h.report().target_mib(), 0);
        assert!(b.take_config_change());
        assert!(!b.take_config_change(), "reading clears it");
    }

    #[test]
    fn stats_parse_whole_entries() {
        let mut buf = Vec::new();
        buf.extend_from_slice(&4u16.to_le_bytes());
        buf.extend_from_slice(&1234u64.to_le_bytes());
        buf.extend_from_slice(&[9, 9, 9]);
        let s = parse_stats(&buf);
        assert_eq!(s.len(), 1);
        assert_eq!(s[&4], 1234);
    }
}
