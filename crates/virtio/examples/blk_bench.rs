//! virtio-blk throughput against plain O_DIRECT `pread` on the same file, in one process
//! and one thread: the driver side keeps `QD` requests in the available ring, the device
//! model serves them (as the VMM's I/O thread would) and the driver reaps and re-posts.
//!
//! Usage: blk_bench <file> <rand4k|seq128k> <seconds per round> [rounds]
//! Rounds alternate pread / virtio so drift in the host disk hits both alike.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use block::{Allocation, DiskImage, Error, Extent, Format};
use virtio::blk::Block;
use virtio::{Queue, QueueLayout, VirtioDevice};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

const QD: u16 = 32;
const QUEUE_SIZE: u16 = 128;
const DESC: u64 = 0x1000;
const AVAIL: u64 = 0x2000;
const USED: u64 = 0x3000;
const HEADERS: u64 = 0x10000;
const STATUS: u64 = 0x20000;
const DATA: u64 = 0x100000;
const MEM_SIZE: usize = 8 << 20;

/// A raw image file opened with O_DIRECT (falls back to buffered I/O if refused).
struct RawDirect {
    file: File,
    size: u64,
    path: PathBuf,
}

fn open_direct(path: &Path) -> (File, bool) {
    match OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
    {
        Ok(f) => (f, true),
        Err(_) => (
            OpenOptions::new()
                .read(true)
                .write(true)
                .open(path)
                .expect("open image"),
            false,
        ),
    }
}

impl RawDirect {
    fn io(&self, e: std::io::Error) -> Error {
        Error::Io {
            path: self.path.clone(),
            source: e,
        }
    }
}

impl DiskImage for RawDirect {
    fn format(&self) -> Format {
        Format::Raw
    }
    fn size(&self) -> u64 {
        self.size
    }
    fn read_only(&self) -> bool {
        false
    }
    fn read_at(&mut self, buf: &mut [u8], offset: u64) -> block::Result<()> {
        self.file.read_exact_at(buf, offset).map_err(|e| self.io(e))
    }
    fn write_at(&mut self, buf: &[u8], offset: u64) -> block::Result<()> {
        self.file.write_all_at(buf, offset).map_err(|e| self.io(e))
    }
    fn flush(&mut self) -> block::Result<()> {
        self.file.sync_data().map_err(|e| self.io(e))
    }
    fn discard(&mut self, _offset: u64, _len: u64) -> block::Result<()> {
        Ok(())
    }
    fn write_zeroes(&mut self, offset: u64, len: u64) -> block::Result<()> {
        let zeroes = vec![0u8; len as usize];
        self.write_at(&zeroes, offset)
    }
    fn allocation(&mut self, offset: u64, len: u64) -> block::Result<Vec<Extent>> {
        Ok(vec![Extent {
            offset,
            len,
            state: Allocation::Data,
        }])
    }
    fn allocated_bytes(&self) -> block::Result<u64> {
        Ok(self.size)
    }
    fn path(&self) -> &Path {
        &self.path
    }
}

/// xorshift64*: reproducible offsets without a dependency.
struct Offsets {
    state: u64,
    seq: u64,
    random: bool,
    block: u64,
    blocks: u64,
}

impl Offsets {
    fn new(seed: u64, random: bool, block: u64, size: u64) -> Self {
        Self {
            state: seed | 1,
            seq: 0,
            random,
            block,
            blocks: size / block,
        }
    }
    fn next(&mut self) -> u64 {
        if self.random {
            self.state ^= self.state >> 12;
            self.state ^= self.state << 25;
            self.state ^= self.state >> 27;
            (self.state.wrapping_mul(0x2545_f491_4f6c_dd1d) % self.blocks) * self.block
        } else {
            let o = self.seq * self.block;
            self.seq = (self.seq + 1) % self.blocks;
            o
        }
    }
}

/// The baseline: `pread`s of the same sizes and offsets into `QD` rotating aligned
/// buffers (the same memory footprint as the guest's in-flight requests).
fn pread_round(file: &File, offsets: &mut Offsets, block: usize, secs: f64) -> (u64, Duration) {
    let mut raw = vec![0u8; block * usize::from(QD) + 4096];
    let start_at = raw.as_ptr().align_offset(4096);
    let bufs = &mut raw[start_at..start_at + block * usize::from(QD)];
    let start = Instant::now();
    let deadline = Duration::from_secs_f64(secs);
    let mut ops = 0;
    while start.elapsed() < deadline {
        for buf in bufs.chunks_exact_mut(block) {
            file.read_exact_at(buf, offsets.next()).expect("pread");
        }
        ops += u64::from(QD);
    }
    (ops, start.elapsed())
}

fn write_desc(mem: &GuestMemoryMmap, i: u16, addr: u64, len: u32, flags: u16, next: u16) {
    let mut raw = [0u8; 16];
    raw[0..8].copy_from_slice(&addr.to_le_bytes());
    raw[8..12].copy_from_slice(&len.to_le_bytes());
    raw[12..14].copy_from_slice(&flags.to_le_bytes());
    raw[14..16].copy_from_slice(&next.to_le_bytes());
    mem.write_slice(&raw, GuestAddress(DESC + 16 * u64::from(i)))
        .unwrap();
}

struct Virtio {
    mem: GuestMemoryMmap,
    queue: Queue,
    blk: Block,
    avail_idx: u16,
    last_used: u16,
}

impl Virtio {
    fn new(path: &Path, block: usize) -> Self {
        let (file, _) = open_direct(path);
        let size = file.metadata().unwrap().len();
        let disk = RawDirect {
            file,
            size,
            path: path.to_path_buf(),
        };
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).unwrap();
        let layout = QueueLayout {
            size: QUEUE_SIZE,
            desc: DESC,
            avail: AVAIL,
            used: USED,
        };
        let queue = Queue::new(&mem, layout, true, true).unwrap();
        // Chains: header (readable), data (writable), status (writable), as Linux builds them.
        for slot in 0..QD {
            let s = u64::from(slot);
            let d = 3 * slot;
            write_desc(&mem, d, HEADERS + 16 * s, 16, 1, d + 1);
            write_desc(&mem, d + 1, DATA + s * block as u64, block as u32, 3, d + 2);
            write_desc(&mem, d + 2, STATUS + s, 1, 2, 0);
        }
        Self {
            mem,
            queue,
            blk: Block::new(Box::new(disk), "bench"),
            avail_idx: 0,
            last_used: 0,
        }
    }

    fn post(&mut self, slot: u16, offset: u64) {
        let s = u64::from(slot);
        let mut header = [0u8; 16];
        header[8..16].copy_from_slice(&(offset / 512).to_le_bytes());
        self.mem
            .write_slice(&header, GuestAddress(HEADERS + 16 * s))
            .unwrap();
        let ring = AVAIL + 4 + 2 * u64::from(self.avail_idx % QUEUE_SIZE);
        self.mem.write_obj(3 * slot, GuestAddress(ring)).unwrap();
        self.avail_idx = self.avail_idx.wrapping_add(1);
        self.mem
            .store(
                self.avail_idx,
                GuestAddress(AVAIL + 2),
                std::sync::atomic::Ordering::Release,
            )
            .unwrap();
    }

    fn round(&mut self, offsets: &mut Offsets, secs: f64) -> (u64, Duration) {
        for slot in 0..QD {
            self.post(slot, offsets.next());
        }
        let start = Instant::now();
        let deadline = Duration::from_secs_f64(secs);
        let mut ops = 0;
        loop {
            self.blk
                .process_queue(0, &mut self.queue, &self.mem)
                .expect("queue");
            self.queue.needs_notification(&self.mem).expect("notify");
            let used: u16 = self
                .mem
                .load(GuestAddress(USED + 2), std::sync::atomic::Ordering::Acquire)
                .unwrap();
            let done = start.elapsed() >= deadline;
            while self.last_used != used {
                let at = USED + 4 + 8 * u64::from(self.last_used % QUEUE_SIZE);
                let id: u32 = self.mem.read_obj(GuestAddress(at)).unwrap();
                let slot = (id / 3) as u16;
                let status: u8 = self
                    .mem
                    .read_obj(GuestAddress(STATUS + u64::from(slot)))
                    .unwrap();
                assert_eq!(status, 0, "request failed");
                self.last_used = self.last_used.wrapping_add(1);
                ops += 1;
                if !done {
                    self.post(slot, offsets.next());
                }
            }
            if done {
                return (ops, start.elapsed());
            }
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        eprintln!("usage: blk_bench <file> <rand4k|seq128k> <seconds per round> [rounds]");
        std::process::exit(2);
    }
    let path = PathBuf::from(&args[1]);
    let (random, block) = match args[2].as_str() {
        "rand4k" => (true, 4096usize),
        "seq128k" => (false, 128 << 10),
        other => panic!("unknown mode {other}"),
    };
    let secs: f64 = args[3].parse().expect("seconds");
    let rounds: u32 = args.get(4).map_or(3, |r| r.parse().expect("rounds"));
    let (file, direct) = open_direct(&path);
    let size = file.metadata().unwrap().len();
    let mut virtio = Virtio::new(&path, block);
    let (mut p_ops, mut p_time, mut v_ops, mut v_time) = (0, Duration::ZERO, 0, Duration::ZERO);
    for r in 0..rounds {
        let seed = 0x9e37_79b9_7f4a_7c15 ^ u64::from(r);
        let (o, t) = pread_round(
            &file,
            &mut Offsets::new(seed, random, block as u64, size),
            block,
            secs,
        );
        p_ops += o;
        p_time += t;
        let (o, t) = virtio.round(
            &mut Offsets::new(seed.rotate_left(17), random, block as u64, size),
            secs,
        );
        v_ops += o;
        v_time += t;
    }
    let p_rate = p_ops as f64 / p_time.as_secs_f64();
    let v_rate = v_ops as f64 / v_time.as_secs_f64();
    let mib = |rate: f64| rate * block as f64 / (1 << 20) as f64;
    println!(
        "{}: O_DIRECT={} qd={} pread {:.0} IOPS ({:.1} MiB/s) | virtio-blk {:.0} IOPS ({:.1} MiB/s) | ratio {:.3}",
        args[2],
        direct,
        QD,
        p_rate,
        mib(p_rate),
        v_rate,
        mib(v_rate),
        v_rate / p_rate
    );
}
