//! `net-rate`: virtio-net transmitting 1514-byte frames as fast as the driver can post them
//! through a transmit bandwidth limit, into a backend that takes every frame.

use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use virtio::net::{Net, NetBackend, NET_HDR_LEN, TX_QUEUE};
use virtio::rate_limiter::{per_second_bucket, Limits, RateLimiterHandle};
use virtio::{Queue, QueueLayout, VirtioDevice};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;

use super::{desc, AVAIL, DATA, MEM_SIZE, QD, QUEUE_SIZE, USED};

const FRAME: u32 = 1514;

/// Counts the bytes of the frames it is sent.
struct Sink {
    bytes: Arc<AtomicU64>,
    fd: EventFd,
}

impl NetBackend for Sink {
    fn recv(&mut self, _buf: &mut [u8]) -> std::io::Result<Option<usize>> {
        Ok(None)
    }
    fn send(&mut self, frame: &[u8]) -> std::io::Result<bool> {
        self.bytes.fetch_add(frame.len() as u64, Ordering::Relaxed);
        Ok(true)
    }
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

fn post(mem: &GuestMemoryMmap, avail_idx: &mut u16, slot: u16) {
    let ring = AVAIL + 4 + 2 * u64::from(*avail_idx % QUEUE_SIZE);
    mem.write_obj(2 * slot, GuestAddress(ring)).unwrap();
    *avail_idx = avail_idx.wrapping_add(1);
    let avail = GuestAddress(AVAIL + 2);
    mem.store(*avail_idx, avail, Ordering::Release).unwrap();
}

pub fn run(mbit_per_s: u64, secs: f64) {
    let bytes_per_s = mbit_per_s * 1_000_000 / 8;
    let limits = Limits {
        bandwidth: per_second_bucket(bytes_per_s),
        ops: None,
    };
    let tx = RateLimiterHandle::new(limits).expect("timerfd");
    let epoll = Epoll::new().expect("epoll");
    let event = EpollEvent::new(EventSet::IN | EventSet::EDGE_TRIGGERED, 0);
    epoll
        .ctl(ControlOperation::Add, tx.timer_fd(), event)
        .expect("epoll_ctl");
    let sent = Arc::new(AtomicU64::new(0));
    let sink = Sink {
        bytes: sent.clone(),
        fd: EventFd::new(libc::EFD_NONBLOCK).expect("eventfd"),
    };
    let (net, _) = Net::new(Box::new(sink), [0x52, 0x54, 0, 0, 0, 1]);
    let mut net = net.with_rate_limiters(None, Some(tx));
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).unwrap();
    let layout = QueueLayout {
        size: QUEUE_SIZE,
        desc: super::DESC,
        avail: AVAIL,
        used: USED,
    };
    let mut queue = Queue::new(&mem, layout, true, true).unwrap();
    // Chains: the virtio-net header, then the frame (both device-readable).
    let stride = u64::from(FRAME) + NET_HDR_LEN as u64;
    let mut avail_idx = 0u16;
    for slot in 0..QD {
        let (s, d) = (u64::from(slot), 2 * slot);
        let at = DATA + s * stride;
        desc(&mem, d, at, NET_HDR_LEN as u32, 1, d + 1);
        desc(&mem, d + 1, at + NET_HDR_LEN as u64, FRAME, 0, 0);
        post(&mem, &mut avail_idx, slot);
    }
    let elapsed = run_queue(&mut net, &mut queue, &mem, &epoll, &mut avail_idx, secs);
    report(mbit_per_s, sent.load(Ordering::Relaxed), elapsed);
}

fn run_queue(
    net: &mut Net,
    queue: &mut Queue,
    mem: &GuestMemoryMmap,
    epoll: &Epoll,
    avail_idx: &mut u16,
    secs: f64,
) -> f64 {
    let mut events = [EpollEvent::default(); 1];
    let mut last_used = 0u16;
    let start = Instant::now();
    while start.elapsed().as_secs_f64() < secs {
        net.process_queue(TX_QUEUE, queue, mem).expect("queue");
        let used: u16 = mem.load(GuestAddress(USED + 2), Ordering::Acquire).unwrap();
        if used == last_used {
            // Blocked: sleep until the limiter's timer fires (as the I/O thread does).
            epoll.wait(100, &mut events).expect("epoll_wait");
        }
        while last_used != used {
            let at = USED + 4 + 8 * u64::from(last_used % QUEUE_SIZE);
            let id: u32 = mem.read_obj(GuestAddress(at)).unwrap();
            last_used = last_used.wrapping_add(1);
            post(mem, avail_idx, (id / 2) as u16);
        }
    }
    start.elapsed().as_secs_f64()
}

fn report(mbit_per_s: u64, bytes: u64, secs: f64) {
    let achieved = bytes as f64 * 8.0 / secs / 1e6;
    // The bucket starts full: a tenth of a second's worth on top of the rate.
    let expected = mbit_per_s as f64 * (secs + 0.1) / secs;
    println!(
        "net tx limit {mbit_per_s} Mbit/s over {secs:.1} s: {achieved:.2} Mbit/s, {:+.2} % from the limit plus its first bucket",
        (achieved / expected - 1.0) * 100.0
    );
}
