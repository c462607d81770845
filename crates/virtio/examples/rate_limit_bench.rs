//! What virtio-blk's rate limiter costs when it does not limit, and how close a limited
//! disk comes to its rate. One process, one thread, no KVM: the driver side keeps `QD`
//! 4 KiB reads in the available ring of a device over an in-memory disk (so the device
//! path, not a disk, is measured) and re-posts what completes.
//!
//! Usage: rate_limit_bench overhead <seconds per round> <rounds>
//!        rate_limit_bench rate <MiB/s> <seconds>
//!        rate_limit_bench net-rate <Mbit/s> <seconds>
//! `overhead` alternates three devices per round — no limiter, the limiter every VMM disk
//! gets (no buckets), buckets too large to ever run short — and prints the medians of the
//! per-round request rates and their ratios to the first. `rate` reads through a
//! bandwidth limit, sleeping on the limiter's timerfd as the I/O thread would, and prints
//! the rate achieved against the limit (the first tenth of a second is the full bucket).
//! `net-rate` does the same for virtio-net's transmit limit with 1514-byte frames.

use std::path::{Path, PathBuf};
use std::time::Instant;

use block::{Allocation, DiskImage, Extent, Format};
use virtio::blk::Block;
use virtio::rate_limiter::{per_second_bucket, BucketConfig, Limits, RateLimiterHandle};
use virtio::{Queue, QueueLayout, VirtioDevice};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};

const QD: u16 = 32;
const QUEUE_SIZE: u16 = 128;
const BLOCK: u64 = 4096;
const DESC: u64 = 0x1000;
const AVAIL: u64 = 0x2000;
const USED: u64 = 0x3000;
const HEADERS: u64 = 0x10000;
const STATUS: u64 = 0x20000;
const DATA: u64 = 0x100000;
const MEM_SIZE: usize = 8 << 20;
const DISK_SIZE: u64 = 64 << 20;

#[path = "rate_limit_bench/net_rate.rs"]
mod net_rate;

struct MemDisk(Vec<u8>, PathBuf);

impl DiskImage for MemDisk {
    fn format(&self) -> Format {
        Format::Raw
    }
    fn size(&self) -> u64 {
        self.0.len() as u64
    }
    fn read_only(&self) -> bool {
        true
    }
    fn read_at(&mut self, buf: &mut [u8], offset: u64) -> block::Result<()> {
        let start = offset as usize;
        buf.copy_from_slice(&self.0[start..start + buf.len()]);
        Ok(())
    }
    fn write_at(&mut self, _buf: &[u8], _offset: u64) -> block::Result<()> {
        Err(block::Error::ReadOnly)
    }
    fn flush(&mut self) -> block::Result<()> {
        Ok(())
    }
    fn discard(&mut self, _offset: u64, _len: u64) -> block::Result<()> {
        Ok(())
    }
    fn write_zeroes(&mut self, _offset: u64, _len: u64) -> block::Result<()> {
        Err(block::Error::ReadOnly)
    }
    fn allocation(&mut self, offset: u64, len: u64) -> block::Result<Vec<Extent>> {
        Ok(vec![Extent {
            offset,
            len,
            state: Allocation::Data,
        }])
    }
    fn allocated_bytes(&self) -> block::Result<u64> {
        Ok(self.size())
    }
    fn path(&self) -> &Path {
        &self.1
    }
}

/// A driver and its device.
struct Bench {
    mem: GuestMemoryMmap,
    queue: Queue,
    blk: Block,
    avail_idx: u16,
    last_used: u16,
    next_offset: u64,
}

impl Bench {
    fn new(limiter: Option<RateLimiterHandle>) -> Self {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).unwrap();
        let layout = QueueLayout {
            size: QUEUE_SIZE,
            desc: DESC,
            avail: AVAIL,
            used: USED,
        };
        let queue = Queue::new(&mem, layout, true, true).unwrap();
        for slot in 0..QD {
            let (s, d) = (u64::from(slot), 3 * slot);
            desc(&mem, d, HEADERS + 16 * s, 16, 1, d + 1);
            desc(&mem, d + 1, DATA + s * BLOCK, BLOCK as u32, 3, d + 2);
            desc(&mem, d + 2, STATUS + s, 1, 2, 0);
        }
        let disk = MemDisk(vec![0x5a; DISK_SIZE as usize], PathBuf::from("mem"));
        let blk = Block::new(Box::new(disk), "bench");
        let blk = match limiter {
            Some(l) => blk.with_rate_limiter(l),
            None => blk,
        };
        let mut bench = Bench {
            mem,
            queue,
            blk,
            avail_idx: 0,
            last_used: 0,
            next_offset: 0,
        };
        for slot in 0..QD {
            bench.post(slot);
        }
        bench
    }

    fn post(&mut self, slot: u16) {
        let mut header = [0u8; 16];
        header[8..16].copy_from_slice(&(self.next_offset / 512).to_le_bytes());
        self.next_offset = (self.next_offset + BLOCK) % DISK_SIZE;
        let at = GuestAddress(HEADERS + 16 * u64::from(slot));
        self.mem.write_slice(&header, at).unwrap();
        let ring = AVAIL + 4 + 2 * u64::from(self.avail_idx % QUEUE_SIZE);
        self.mem.write_obj(3 * slot, GuestAddress(ring)).unwrap();
        self.avail_idx = self.avail_idx.wrapping_add(1);
        let ordering = std::sync::atomic::Ordering::Release;
        let avail = GuestAddress(AVAIL + 2);
        self.mem.store(self.avail_idx, avail, ordering).unwrap();
    }

    /// Runs the queue once and re-posts what completed; returns how many did.
    fn step(&mut self) -> u64 {
        let queue = &mut self.queue;
        self.blk.process_queue(0, queue, &self.mem).expect("queue");
        let ordering = std::sync::atomic::Ordering::Acquire;
        let used: u16 = self.mem.load(GuestAddress(USED + 2), ordering).unwrap();
        let mut done = 0;
        while self.last_used != used {
            let at = USED + 4 + 8 * u64::from(self.last_used % QUEUE_SIZE);
            let id: u32 = self.mem.read_obj(GuestAddress(at)).unwrap();
            self.last_used = self.last_used.wrapping_add(1);
            self.post((id / 3) as u16);
            done += 1;
        }
        done
    }
}

pub(crate) fn desc(mem: &GuestMemoryMmap, i: u16, addr: u64, len: u32, flags: u16, next: u16) {
    let mut raw = [0u8; 16];
    raw[0..8].copy_from_slice(&addr.to_le_bytes());
    raw[8..12].copy_from_slice(&len.to_le_bytes());
    raw[12..14].copy_from_slice(&flags.to_le_bytes());
    raw[14..16].copy_from_slice(&next.to_le_bytes());
    let at = GuestAddress(DESC + 16 * u64::from(i));
    mem.write_slice(&raw, at).unwrap();
}

/// Requests per second over `secs`.
fn round(bench: &mut Bench, secs: f64) -> f64 {
    let start = Instant::now();
    let mut ops = 0;
    while start.elapsed().as_secs_f64() < secs {
        ops += bench.step();
    }
    ops as f64 / start.elapsed().as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn overhead(secs: f64, rounds: usize) {
    let huge = BucketConfig {
        size: u64::MAX / 4,
        one_time_burst: 0,
        refill_time_ms: 1,
    };
    let limiter = |limits| Some(RateLimiterHandle::new(limits).expect("timerfd"));
    let unlimited = Limits::default();
    let never_short = Limits {
        bandwidth: Some(huge),
        ops: Some(huge),
    };
    let mut benches = [
        ("no limiter", Bench::new(None)),
        ("limiter, no buckets", Bench::new(limiter(unlimited))),
        (
            "limiter, buckets never short",
            Bench::new(limiter(never_short)),
        ),
    ];
    let mut rates = vec![Vec::new(); benches.len()];
    for _ in 0..rounds {
        for (i, (_, bench)) in benches.iter_mut().enumerate() {
            rates[i].push(round(bench, secs));
        }
    }
    let medians: Vec<f64> = rates.into_iter().map(median).collect();
    for ((name, _), m) in benches.iter().zip(&medians) {
        println!(
            "{name:30} median {m:>10.0} req/s ({:.0} MiB/s)  ratio {:.3}",
            m * BLOCK as f64 / f64::from(1 << 20),
            m / medians[0]
        );
    }
}

fn limited(mib_per_s: u64, secs: f64) {
    let bucket = per_second_bucket(mib_per_s << 20).expect("a rate above 0");
    let limits = Limits {
        bandwidth: Some(bucket),
        ops: None,
    };
    let limiter = RateLimiterHandle::new(limits).expect("timerfd");
    let epoll = Epoll::new().expect("epoll");
    let event = EpollEvent::new(EventSet::IN | EventSet::EDGE_TRIGGERED, 0);
    epoll
        .ctl(ControlOperation::Add, limiter.timer_fd(), event)
        .expect("epoll_ctl");
    let mut bench = Bench::new(Some(limiter));
    let mut events = [EpollEvent::default(); 1];
    let start = Instant::now();
    let mut ops = 0;
    while start.elapsed().as_secs_f64() < secs {
        let done = bench.step();
        ops += done;
        if done == 0 {
            // Blocked: sleep until the limiter's timer fires (as the I/O thread does).
            epoll.wait(100, &mut events).expect("epoll_wait");
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let achieved = (ops * BLOCK) as f64 / elapsed / f64::from(1 << 20);
    // The bucket starts full: a tenth of a second's worth on top of the rate.
    let expected = mib_per_s as f64 * (elapsed + 0.1) / elapsed;
    println!(
        "limit {mib_per_s} MiB/s over {elapsed:.1} s: {achieved:.2} MiB/s, {:+.2} % from the limit plus its first bucket",
        (achieved / expected - 1.0) * 100.0
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let number = |i: usize, what: &str| -> f64 {
        args.get(i)
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("{what} expected as argument {i}"))
    };
    match args.get(1).map(String::as_str) {
        Some("overhead") => overhead(number(2, "seconds"), number(3, "rounds") as usize),
        Some("rate") => limited(number(2, "MiB/s") as u64, number(3, "seconds")),
        Some("net-rate") => net_rate::run(number(2, "Mbit/s") as u64, number(3, "seconds")),
        _ => {
            eprintln!(
                "usage: rate_limit_bench overhead SECS ROUNDS | rate MIB_PER_S SECS | net-rate MBIT_PER_S SECS"
            );
            std::process::exit(2);
        }
    }
}
