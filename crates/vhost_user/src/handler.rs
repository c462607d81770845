//! The vhost crate's request handler trait over [`Core`]: the vhost crate parses and
//! answers the messages, this passes them on.
//!
//! Errors: a refused request the frontend can be told about (an ack with REPLY_ACK, or
//! no reply at all) is a [`VhostError::ReqHandlerError`], after which the connection goes
//! on; a request whose reply cannot be sent (GET_VRING_BASE of a missing queue...) fails
//! with another error, which makes the server close the connection rather than leave the
//! frontend waiting for an answer.

use std::fs::File;
use std::sync::{Arc, Mutex, MutexGuard};

use vhost::vhost_user::message::{
    VhostTransferStateDirection, VhostTransferStatePhase, VhostUserConfigFlags, VhostUserInflight,
    VhostUserLog, VhostUserMemoryRegion, VhostUserProtocolFeatures, VhostUserShMemConfig,
    VhostUserSharedMsg, VhostUserSingleMemoryRegion, VhostUserVringAddrFlags, VhostUserVringState,
};
use vhost::vhost_user::{
    Error as VhostError, GpuBackend, Result as VhostResult, VhostUserBackendReqHandlerMut,
};
use vhost::VhostUserMemoryRegionBase;

use crate::session::{Core, SessionError};
use crate::vring::RingAddrs;

pub(crate) fn lock(core: &Mutex<Core>) -> MutexGuard<'_, Core> {
    core.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Serves one frontend's requests.
pub struct RequestHandler {
    core: Arc<Mutex<Core>>,
}

impl RequestHandler {
    pub(crate) fn new(core: Arc<Mutex<Core>>) -> Self {
        Self { core }
    }

    fn core(&self) -> MutexGuard<'_, Core> {
        lock(&self.core)
    }
}

/// A refused request; the connection goes on.
fn refused(e: SessionError) -> VhostError {
    VhostError::ReqHandlerError(std::io::Error::other(e.to_string()))
}

fn unsupported(what: &'static str) -> VhostError {
    VhostError::InvalidOperation(what)
}

impl VhostUserBackendReqHandlerMut for RequestHandler {
    fn set_owner(&mut self) -> VhostResult<()> {
        Ok(())
    }

    fn reset_owner(&mut self) -> VhostResult<()> {
        self.core().reset().map_err(refused)
    }

    fn reset_device(&mut self) -> VhostResult<()> {
        self.core().reset().map_err(refused)
    }

    fn get_features(&mut self) -> VhostResult<u64> {
        Ok(self.core().features())
    }

    fn set_features(&mut self, features: u64) -> VhostResult<()> {
        self.core().set_features(features).map_err(refused)
    }

    fn set_mem_table(
        &mut self,
        regions: &[VhostUserMemoryRegion],
        files: Vec<File>,
        _postcopy_listening: Option<bool>,
    ) -> VhostResult<Option<Vec<VhostUserMemoryRegionBase>>> {
        self.core()
            .set_mem_table(regions, files)
            .map(|()| None)
            .map_err(refused)
    }

    fn set_vring_num(&mut self, index: u32, num: u32) -> VhostResult<()> {
        self.core().set_vring_num(index, num).map_err(refused)
    }

    fn set_vring_addr(
        &mut self,
        index: u32,
        _flags: VhostUserVringAddrFlags,
        descriptor: u64,
        used: u64,
        available: u64,
        _log: u64,
    ) -> VhostResult<()> {
        let addrs = RingAddrs {
            desc: descriptor,
            avail: available,
            used,
        };
        self.core().set_vring_addr(index, addrs).map_err(refused)
    }

    fn set_vring_base(&mut self, index: u32, base: u32) -> VhostResult<()> {
        self.core().set_vring_base(index, base).map_err(refused)
    }

    fn get_vring_base(&mut self, index: u32) -> VhostResult<VhostUserVringState> {
        match self.core().get_vring_base(index) {
            Ok(base) => Ok(VhostUserVringState::new(index, u32::from(base))),
            // No reply is sent: the connection must end.
            Err(_) => Err(VhostError::InvalidParam),
        }
    }

    fn set_vring_kick(&mut self, index: u8, fd: Option<File>) -> VhostResult<()> {
        self.core()
            .set_vring_kick(u32::from(index), fd)
            .map_err(refused)
    }

    fn set_vring_call(&mut self, index: u8, fd: Option<File>) -> VhostResult<()> {
        self.core()
            .set_vring_call(u32::from(index), fd)
            .map_err(refused)
    }

    fn set_vring_err(&mut self, index: u8, fd: Option<File>) -> VhostResult<()> {
        self.core()
            .set_vring_err(u32::from(index), fd)
            .map_err(refused)
    }

    fn get_protocol_features(&mut self) -> VhostResult<VhostUserProtocolFeatures> {
        Ok(self.core().protocol_features())
    }

    fn set_protocol_features(&mut self, features: u64) -> VhostResult<()> {
        self.core().set_protocol_features(features).map_err(refused)
    }

    fn get_queue_num(&mut self) -> VhostResult<u64> {
        Ok(self.core().queue_num())
    }

    fn set_vring_enable(&mut self, index: u32, enable: bool) -> VhostResult<()> {
        self.core().set_vring_enable(index, enable).map_err(refused)
    }

    fn get_config(
        &mut self,
        offset: u32,
        size: u32,
        _flags: VhostUserConfigFlags,
    ) -> VhostResult<Vec<u8>> {
        // The vhost crate answers an error with an empty payload.
        self.core().read_config(offset, size).map_err(refused)
    }

    fn set_config(
        &mut self,
        offset: u32,
        buf: &[u8],
        _flags: VhostUserConfigFlags,
    ) -> VhostResult<()> {
        self.core().write_config(offset, buf).map_err(refused)
    }

    fn set_gpu_socket(&mut self, _gpu_backend: GpuBackend) -> VhostResult<()> {
        Err(unsupported("GPU_SET_SOCKET"))
    }

    fn get_shared_object(&mut self, _uuid: VhostUserSharedMsg) -> VhostResult<File> {
        Err(unsupported("GET_SHARED_OBJECT"))
    }

    fn get_inflight_fd(
        &mut self,
        _inflight: &VhostUserInflight,
    ) -> VhostResult<(VhostUserInflight, File)> {
        Err(unsupported("GET_INFLIGHT_FD"))
    }

    fn set_inflight_fd(&mut self, _inflight: &VhostUserInflight, _file: File) -> VhostResult<()> {
        Err(unsupported("SET_INFLIGHT_FD"))
    }

    fn get_max_mem_slots(&mut self) -> VhostResult<u64> {
        Err(unsupported("GET_MAX_MEM_SLOTS"))
    }

    fn add_mem_region(
        &mut self,
        _region: &VhostUserSingleMemoryRegion,
        _fd: File,
        _postcopy_listening: Option<bool>,
    ) -> VhostResult<Option<VhostUserMemoryRegionBase>> {
        Err(unsupported("ADD_MEM_REG"))
    }

    fn remove_mem_region(&mut self, _region: &VhostUserSingleMemoryRegion) -> VhostResult<()> {
        Err(unsupported("REM_MEM_REG"))
    }

    fn set_device_state_fd(
        &mut self,
        _direction: VhostTransferStateDirection,
        _phase: VhostTransferStatePhase,
        _fd: File,
    ) -> VhostResult<Option<File>> {
        Err(unsupported("SET_DEVICE_STATE_FD"))
    }

    fn check_device_state(&mut self) -> VhostResult<()> {
        Err(unsupported("CHECK_DEVICE_STATE"))
    }

    fn get_shmem_config(&mut self) -> VhostResult<VhostUserShMemConfig> {
        Err(unsupported("GET_SHMEM_CONFIG"))
    }

    fn set_log_base(&mut self, log: &VhostUserLog, file: File) -> VhostResult<()> {
        self.core()
            .set_log_base(file, log.mmap_size, log.mmap_offset)
            .map_err(refused)
    }
}
