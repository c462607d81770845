//! The sending side: connect, announce the machine, copy memory while the guest runs
//! (pre-copy rounds over KVM's dirty log), pause, send the last dirty pages with the
//! paused VM's state, and hand over once the receiver is ready. Anything failing before
//! the hand-over leaves this VM as it was (resumed if it was running).

use std::io::{BufWriter, Write};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use arch::GuestMemory;
use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};

use super::dirty::{self, DirtyLog, PAGE_SIZE};
use super::disk_copy::{DiskCopy, DiskDirty};
use super::transport::{MigrationUrl, Stream};
use super::wire::{self, Kind, MAX_MEMORY_CHUNK};
use super::worker::Shared;
use super::MigrationError;
use crate::control::VmHandle;
use crate::page_map::{is_touched, PageMap};

/// Pre-copy rounds after the first full copy, at most; then the VM is paused whatever
/// remains dirty.
const MAX_ROUNDS: u32 = 30;
/// How long the receiver gets to build the VM and answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);

/// What `PUT /migration/send` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendOptions {
    pub url: MigrationUrl,
    /// The pause the guest may see: pre-copy goes on until the dirty pages left would take
    /// no longer than this to send at the bandwidth measured so far.
    pub max_downtime_ms: u64,
    /// At most this many MiB/s of guest memory and disk data (no limit when absent).
    pub bandwidth_mib_s: Option<u64>,
    /// Stream the disks too (for hosts without shared storage); the receiver must wait
    /// for them (`Storage::Copied`).
    pub copy_storage: bool,
}

/// Which pages a pass sends.
enum Pick<'a> {
    /// Every page that is not all zeros (the receiver's fresh RAM is zeroed); pages the
    /// page map says were never touched are not even read.
    NonZero(Option<&'a PageMap>),
    /// The pages set in each region's dirty bitmap.
    Dirty(&'a [Vec<u64>]),
}

/// Writes guest memory (and disks) to the stream at a bounded rate, counting what was
/// sent.
pub(super) struct MemoryWriter<'a> {
    out: BufWriter<Stream>,
    shared: &'a Shared,
    started: Instant,
    /// Bytes of guest memory sent.
    sent: u64,
    /// Bytes of disk data sent (zero ranges not counted).
    disk_sent: u64,
    bytes_per_s: Option<u64>,
}

/// A page of zeros to compare with (slice equality is one `memcmp`).
static ZERO_PAGE: [u8; PAGE_SIZE as usize] = [0; PAGE_SIZE as usize];

pub(super) fn is_zero(page: &[u8]) -> bool {
    ZERO_PAGE
        .get(..page.len())
        .is_some_and(|zeros| page == zeros)
}

impl MemoryWriter<'_> {
    fn check_cancel(&self) -> Result<(), MigrationError> {
        if self.shared.cancel.load(Ordering::Acquire) {
            return Err(MigrationError::Cancelled);
        }
        Ok(())
    }

    /// Sends `bytes` at `addr`, sleeping as the bandwidth limit asks.
    fn chunk(&mut self, addr: u64, bytes: &[u8]) -> Result<(), MigrationError> {
        self.check_cancel()?;
        wire::write_memory(&mut self.out, addr, bytes)?;
        self.sent += bytes.len() as u64;
        self.shared.update(|p| p.sent_bytes = self.sent);
        self.pace();
        Ok(())
    }

    /// Sends `bytes` of disk `disk` at `offset`, paced as memory is.
    pub(super) fn disk_data(
        &mut self,
        disk: u32,
        offset: u64,
        bytes: &[u8],
    ) -> Result<(), MigrationError> {
        self.check_cancel()?;
        wire::write_disk_data(&mut self.out, disk, offset, bytes)?;
        self.disk_sent += bytes.len() as u64;
        self.shared
            .update(|p| p.disk_sent_bytes = Some(self.disk_sent));
        self.pace();
        Ok(())
    }

    /// Tells the receiver that `len` bytes of disk `disk` at `offset` read as zeroes.
    pub(super) fn disk_zero(
        &mut self,
        disk: u32,
        offset: u64,
        len: u64,
    ) -> Result<(), MigrationError> {
        self.check_cancel()?;
        wire::write_disk_zero(&mut self.out, disk, offset, len)?;
        Ok(())
    }

    /// Sleeps as long as the bandwidth limit asks for what was sent so far.
    fn pace(&self) {
        if let Some(rate) = self.bytes_per_s.filter(|&r| r > 0) {
            let total = self.sent + self.disk_sent;
            let due = Duration::from_secs_f64(total as f64 / rate as f64);
            if let Some(wait) = due.checked_sub(self.started.elapsed()) {
                std::thread::sleep(wait);
            }
        }
    }

    /// Sends the pages `pick` selects, contiguous runs in one frame each; how many.
    fn pass(&mut self, mem: &GuestMemory, pick: &Pick) -> Result<u64, MigrationError> {
        let max_run = u64::from(MAX_MEMORY_CHUNK) / PAGE_SIZE;
        let mut pages_sent = 0;
        for (index, region) in mem.iter().enumerate() {
            let len = region.len();
            let touched = match pick {
                Pick::NonZero(map) => crate::page_map::touched_pages(*map, region),
                Pick::Dirty(_) => None,
            };
            // SAFETY: the region maps `len` bytes for as long as `mem` lives. The guest may
            // write them while this reads (pre-copy): a page torn that way is in KVM's
            // dirty log and sent again while the VM is paused.
            let bytes =
                unsafe { std::slice::from_raw_parts(region.as_ptr().cast_const(), len as usize) };
            let wanted = |page: u64| {
                let start = (page * PAGE_SIZE) as usize;
                let end = (start + PAGE_SIZE as usize).min(bytes.len());
                match pick {
                    Pick::NonZero(_) => {
                        touched.as_ref().is_none_or(|t| is_touched(t, page))
                            && !is_zero(&bytes[start..end])
                    }
                    Pick::Dirty(maps) => maps.get(index).is_some_and(|m| dirty::is_set(m, page)),
                }
            };
            let pages = len.div_ceil(PAGE_SIZE);
            let mut page = 0;
            while page < pages {
                if !wanted(page) {
                    page += 1;
                    continue;
                }
                let first = page;
                while page < pages && page - first < max_run && wanted(page) {
                    page += 1;
                }
                let start = first * PAGE_SIZE;
                let end = (page * PAGE_SIZE).min(len);
                self.chunk(
                    region.start_addr().0 + start,
                    &bytes[start as usize..end as usize],
                )?;
                pages_sent += page - first;
            }
        }
        Ok(pages_sent)
    }

    /// Bytes per second sent since the start.
    fn bandwidth(&self) -> f64 {
        (self.sent + self.disk_sent) as f64 / self.started.elapsed().as_secs_f64().max(1e-3)
    }
}

/// Migrates the VM of `handle` as `opts` says. On success the VM is handed over: this VMM
/// is told to end (`ExitReason::Migrated`).
pub(crate) fn send(
    handle: &VmHandle,
    opts: &SendOptions,
    shared: &Shared,
) -> Result<(), MigrationError> {
    let source = &handle.snapshot;
    if let Some(device) = &source.unsupported_device {
        return Err(MigrationError::Unsupported(format!(
            "its {device} device's state cannot be saved"
        )));
    }
    let stream = Stream::connect(&opts.url)?;
    let answers = stream.try_clone().map_err(wire::WireError::from)?;
    shared.set_connection(stream.try_clone().ok());
    let result = send_on(handle, opts, shared, stream, answers);
    shared.set_connection(None);
    match result {
        // A cancel shuts the connection down: whatever failed then, it was the cancel.
        Err(e)
            if shared.cancel.load(Ordering::Acquire)
                && !matches!(e, MigrationError::Unconfirmed(_)) =>
        {
            Err(MigrationError::Cancelled)
        }
        other => other,
    }
}

fn send_on(
    handle: &VmHandle,
    opts: &SendOptions,
    shared: &Shared,
    stream: Stream,
    answers: Stream,
) -> Result<(), MigrationError> {
    answers
        .set_read_timeout(Some(ANSWER_TIMEOUT))
        .map_err(wire::WireError::from)?;
    let mut writer = MemoryWriter {
        out: BufWriter::with_capacity(1 << 16, stream),
        shared,
        started: Instant::now(),
        sent: 0,
        disk_sent: 0,
        bytes_per_s: opts.bandwidth_mib_s.map(|m| m.saturating_mul(1 << 20)),
    };
    let was_running = !handle.gate.is_paused();
    let outcome = copy_and_pause(handle, opts, &mut writer, answers, was_running);
    match outcome {
        Ok(paused_at) if shared.begin_hand_over() => hand_over(handle, writer, paused_at, shared),
        Ok((_, answers)) => {
            super::receive::refuse(&mut { answers }, "cancelled");
            if was_running {
                handle.resume();
            }
            Err(MigrationError::Cancelled)
        }
        Err((e, answers)) => {
            if let Some(mut answers) = answers {
                super::receive::refuse(&mut answers, &e.to_string());
                answers.shutdown();
            }
            if was_running {
                handle.resume();
            }
            Err(e)
        }
    }
}

type Failed = (MigrationError, Option<Stream>);

/// What the last look at the logs found and no pass has sent yet.
#[derive(Default)]
struct Pending {
    memory: Option<Vec<Vec<u64>>>,
    disks: Option<DiskDirty>,
}

/// Everything up to the receiver's `Ready`: the time the VM was paused.
fn copy_and_pause(
    handle: &VmHandle,
    opts: &SendOptions,
    writer: &mut MemoryWriter,
    mut answers: Stream,
    was_running: bool,
) -> Result<(Instant, Stream), Failed> {
    let source = &handle.snapshot;
    let copied = announce(handle, opts, writer).and_then(|mut disks| {
        // Pre-copy while the guest runs; KVM logs the vCPUs' writes, `dirty_log` the
        // device models' and the emulator's, each disk its own. A paused VM's memory is
        // copied as it is. So is a VM with shares' once paused: what virtiofsd writes
        // into guest memory is in no dirty log.
        if let Some(disks) = disks.as_mut() {
            disks.send_all(writer)?;
        }
        let log = if was_running && source.machine.shares.is_empty() {
            Some(DirtyLog::start(&source.vm, &source.mem)?)
        } else {
            None
        };
        let mut pending = Pending::default();
        if let Some(log) = &log {
            let first = Pick::NonZero(source.page_map.as_ref());
            precopy_rounds(
                log,
                disks.as_mut(),
                opts,
                writer,
                (&source.mem, &first),
                &mut pending,
            )?;
        }
        Ok((disks, log, pending))
    });
    let (mut disks, log, pending) = match copied {
        Ok(c) => c,
        Err(e) => return Err((e, Some(answers))),
    };
    handle.pause();
    let paused_at = Instant::now();
    writer
        .shared
        .update(|p| p.state = super::MigrationState::Paused);
    writer.shared.update(|p| p.rounds += 1);
    let captured = source.capture(handle.gate.as_ref(), &mut |mem| {
        final_pass(mem, disks.as_mut(), log.as_ref(), &pending, writer, source)
    });
    drop(log);
    drop(disks);
    let result = captured.and_then(|(snapshot, _)| {
        let state = serde_json::to_vec(&snapshot)
            .map_err(|e| MigrationError::Machine(format!("cannot encode the state: {e}")))?;
        wire::write_frame(&mut writer.out, Kind::State, &state)?;
        wire::write_frame(&mut writer.out, Kind::Done, &[])?;
        writer.out.flush().map_err(wire::WireError::from)?;
        wire::expect(&mut answers, Kind::Ready)?.map_err(MigrationError::Receiver)?;
        Ok(())
    });
    match result {
        Ok(()) => Ok((paused_at, answers)),
        Err(e) => Err((e, Some(answers))),
    }
}

/// The preamble and the machine; with `copy_storage`, the disks' sizes, their writes
/// logged from now on.
fn announce<'h>(
    handle: &'h VmHandle,
    opts: &SendOptions,
    writer: &mut MemoryWriter,
) -> Result<Option<DiskCopy<'h>>, MigrationError> {
    let machine = serde_json::to_vec(&handle.snapshot.machine)
        .map_err(|e| MigrationError::Machine(e.to_string()))?;
    wire::write_preamble(&mut writer.out)?;
    wire::write_frame(&mut writer.out, Kind::Machine, &machine)?;
    if !opts.copy_storage {
        return Ok(None);
    }
    let disks = DiskCopy::start(&handle.devices)?;
    wire::write_disks(&mut writer.out, &disks.sizes())?;
    Ok(Some(disks))
}

/// While the VM is paused and its queues frozen: what was written since the last look,
/// disks first, then memory (everything, for a VM that was paused before).
fn final_pass(
    mem: &GuestMemory,
    disks: Option<&mut DiskCopy>,
    log: Option<&DirtyLog>,
    pending: &Pending,
    writer: &mut MemoryWriter,
    source: &crate::snapshot::SnapshotSource,
) -> Result<u64, MigrationError> {
    if let Some(disks) = disks {
        let dirty = disks.take();
        disks.send_dirty(writer, &dirty, pending.disks.as_ref())?;
    }
    match (log, &pending.memory) {
        (Some(log), Some(earlier)) => {
            let mut maps = log.take()?;
            for (now, before) in maps.iter_mut().zip(earlier) {
                for (a, b) in now.iter_mut().zip(before) {
                    *a |= *b;
                }
            }
            writer
                .shared
                .update(|p| p.dirty_pages = dirty::count(&maps));
            writer.pass(mem, &Pick::Dirty(&maps))
        }
        _ => writer.pass(mem, &Pick::NonZero(source.page_map.as_ref())),
    }
}

/// Full copy, then rounds of dirty pages (and disk chunks) until what is left fits the
/// downtime (or the round cap); leaves the last, unsent dirty sets in `pending`.
fn precopy_rounds(
    log: &DirtyLog,
    mut disks: Option<&mut DiskCopy>,
    opts: &SendOptions,
    writer: &mut MemoryWriter,
    (mem, first): (&GuestMemory, &Pick),
    pending: &mut Pending,
) -> Result<(), MigrationError> {
    writer.shared.update(|p| p.rounds = 1);
    writer.pass(mem, first)?;
    for round in 2..=MAX_ROUNDS + 1 {
        let maps = log.take()?;
        let disk_maps = disks.as_ref().map(|d| d.take());
        let disk_bytes = disk_maps.as_ref().map_or(0, DiskCopy::bytes);
        let dirty_bytes = dirty::count(&maps) * PAGE_SIZE + disk_bytes;
        tracing::debug!(
            "pre-copy round {round}: {} dirty pages, {disk_bytes} dirty disk bytes",
            dirty::count(&maps)
        );
        let expected_ms = (dirty_bytes as f64 / writer.bandwidth() * 1000.0) as u64;
        writer.shared.update(|p| {
            p.dirty_pages = dirty::count(&maps);
            p.dirty_disk_bytes = disk_maps.as_ref().map(|_| disk_bytes);
            p.expected_downtime_ms = expected_ms;
        });
        if expected_ms <= opts.max_downtime_ms || round > MAX_ROUNDS {
            pending.memory = Some(maps);
            pending.disks = disk_maps;
            return Ok(());
        }
        writer.shared.update(|p| p.rounds = round);
        if let (Some(disks), Some(dirty)) = (disks.as_deref_mut(), &disk_maps) {
            disks.send_dirty(writer, dirty, None)?;
        }
        writer.pass(mem, &Pick::Dirty(&maps))?;
    }
    Ok(())
}

/// After `Ready`: tell the receiver to go and wait for it to confirm. From `Go` on this VM
/// never runs again, whatever happens.
fn hand_over(
    handle: &VmHandle,
    mut writer: MemoryWriter,
    (paused_at, mut answers): (Instant, Stream),
    shared: &Shared,
) -> Result<(), MigrationError> {
    let go = wire::write_frame(&mut writer.out, Kind::Go, &[])
        .and_then(|()| writer.out.flush().map_err(wire::WireError::from));
    let confirmed = go.and_then(|()| wire::expect(&mut answers, Kind::Resumed));
    match confirmed {
        Ok(Ok(_)) => {
            let downtime = paused_at.elapsed().as_millis() as u64;
            shared.update(|p| {
                p.state = super::MigrationState::Completed;
                p.downtime_ms = Some(downtime);
                p.total_ms = Some(writer.started.elapsed().as_millis() as u64);
            });
            tracing::info!(
                "migrated: {} bytes of memory sent, {downtime} ms paused",
                writer.sent
            );
            handle.exit.request(devices::ExitReason::Migrated);
            Ok(())
        }
        Ok(Err(reason)) => Err(MigrationError::Unconfirmed(reason)),
        Err(e) => Err(MigrationError::Unconfirmed(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_pages_are_found() {
        let mut page = vec![0u8; 4096];
        assert!(is_zero(&page));
        page[4095] = 1;
        assert!(!is_zero(&page));
    }
}
