//! The migration thread and its control: the thread is started with the VM (before the
//! VMM confines itself, so that it can have a seccomp role with sockets, which no other
//! thread of the VM has) and waits for a send request; progress and cancellation are
//! shared with whoever asks (`GET /migration`, `PUT /migration/cancel`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};

use serde::Serialize;

use super::send::{send, SendOptions};
use super::MigrationError;
use crate::control::VmHandle;

/// Where a migration of this VM stands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MigrationState {
    /// No migration was asked for.
    #[default]
    None,
    /// Copying memory while the guest runs.
    Sending,
    /// The guest is paused; the rest and the state are being sent.
    Paused,
    /// The receiver was told to resume; no cancelling any more.
    HandingOver,
    /// The receiver runs the VM; this VMM ends.
    Completed,
    /// It failed; the VM goes on here.
    Failed,
    /// It was cancelled; the VM goes on here.
    Cancelled,
}

/// What `GET /migration` shows.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct MigrationProgress {
    pub state: MigrationState,
    /// Copy rounds so far (1: the first full copy).
    pub rounds: u32,
    /// Pages found dirty by the last look at the log.
    pub dirty_pages: u64,
    /// Bytes of guest memory sent.
    pub sent_bytes: u64,
    /// Bytes of disk data sent (`--copy-storage` only; ranges of zeroes not counted).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disk_sent_bytes: Option<u64>,
    /// Bytes of disk the last look found written (`--copy-storage` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dirty_disk_bytes: Option<u64>,
    /// How long sending the dirty pages left would take at the measured bandwidth.
    pub expected_downtime_ms: u64,
    /// From pause to the receiver's confirmation, once completed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub downtime_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total_ms: Option<u64>,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Shared between the migration thread and the control.
#[derive(Default)]
pub(crate) struct Shared {
    progress: Mutex<MigrationProgress>,
    pub(crate) cancel: AtomicBool,
    /// The migration's connection, shut down by a cancel so that a send blocked on a
    /// receiver that stopped reading fails at once.
    connection: Mutex<Option<super::Stream>>,
}

impl Shared {
    pub(crate) fn update(&self, f: impl FnOnce(&mut MigrationProgress)) {
        f(&mut self.progress.lock().unwrap_or_else(|p| p.into_inner()));
    }

    /// Moves to `HandingOver` unless a cancel came first (then `false`).
    pub(crate) fn begin_hand_over(&self) -> bool {
        let mut progress = self.progress.lock().unwrap_or_else(|p| p.into_inner());
        if self.cancel.load(Ordering::Acquire) {
            return false;
        }
        progress.state = MigrationState::HandingOver;
        true
    }

    /// Remembers the connection of the migration in progress (`None` when it ends).
    pub(crate) fn set_connection(&self, stream: Option<super::Stream>) {
        *self.connection.lock().unwrap_or_else(|p| p.into_inner()) = stream;
        if self.cancel.load(Ordering::Acquire) {
            self.shut_down();
        }
    }

    fn shut_down(&self) {
        if let Some(s) = &*self.connection.lock().unwrap_or_else(|p| p.into_inner()) {
            s.shutdown();
        }
    }

    fn snapshot(&self) -> MigrationProgress {
        self.progress
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

struct Job {
    opts: SendOptions,
    reply: mpsc::Sender<Result<(), MigrationError>>,
}

/// The handle side: asks the migration thread to send, reports progress, cancels.
pub struct MigrationControl {
    jobs: Mutex<Option<mpsc::Sender<Job>>>,
    waiting: Mutex<Option<mpsc::Receiver<Job>>>,
    shared: Arc<Shared>,
}

impl Default for MigrationControl {
    fn default() -> Self {
        let (tx, rx) = mpsc::channel();
        Self {
            jobs: Mutex::new(Some(tx)),
            waiting: Mutex::new(Some(rx)),
            shared: Arc::default(),
        }
    }
}

impl MigrationControl {
    /// Migrates the VM; returns when it is handed over (the VMM then ends) or failed.
    pub fn send(&self, opts: SendOptions) -> Result<(), MigrationError> {
        {
            let mut progress = self
                .shared
                .progress
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if matches!(
                progress.state,
                MigrationState::Sending
                    | MigrationState::Paused
                    | MigrationState::HandingOver
                    | MigrationState::Completed
            ) {
                return Err(MigrationError::InProgress);
            }
            *progress = MigrationProgress {
                state: MigrationState::Sending,
                ..Default::default()
            };
            self.shared.cancel.store(false, Ordering::Release);
        }
        let (reply, answer) = mpsc::channel();
        let sent = self
            .jobs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|jobs| jobs.send(Job { opts, reply }).is_ok());
        let result = if sent == Some(true) {
            answer.recv().unwrap_or(Err(MigrationError::WorkerGone))
        } else {
            Err(MigrationError::WorkerGone)
        };
        if let Err(e) = &result {
            self.shared.update(|p| {
                p.state = if matches!(e, MigrationError::Cancelled) {
                    MigrationState::Cancelled
                } else {
                    MigrationState::Failed
                };
                p.error = Some(e.to_string());
            });
        }
        result
    }

    /// Asks a running migration to stop (before the hand-over); whether one was running.
    pub fn cancel(&self) -> bool {
        let running = {
            let progress = self
                .shared
                .progress
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let running = matches!(
                progress.state,
                MigrationState::Sending | MigrationState::Paused
            );
            if running {
                self.shared.cancel.store(true, Ordering::Release);
            }
            running
        };
        if running {
            self.shared.shut_down();
        }
        running
    }

    pub fn progress(&self) -> MigrationProgress {
        self.shared.snapshot()
    }

    /// No more migrations: the thread ends.
    pub(crate) fn close(&self) {
        self.jobs.lock().unwrap_or_else(|p| p.into_inner()).take();
    }
}

/// Starts the migration thread of the VM behind `handle` (once; later calls do nothing).
pub(crate) fn spawn_worker(handle: VmHandle) -> std::io::Result<()> {
    let Some(jobs) = handle
        .migration
        .waiting
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take()
    else {
        return Ok(());
    };
    std::thread::Builder::new()
        .name("vessel-migration".into())
        // KVM structures in the state are large in debug builds; untouched stack costs no RSS.
        .stack_size(2 << 20)
        .spawn(move || {
            crate::confinement::enter(confine::Role::Migration);
            let shared = handle.migration.shared.clone();
            while let Ok(job) = jobs.recv() {
                let _ = job.reply.send(send(&handle, &job.opts, &shared));
            }
        })?;
    Ok(())
}
