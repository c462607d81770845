//! Where COM1's output goes, opened before the VM is built: stdout, an appended file,
//! nowhere, or a background VM's log plus the console socket its clients attach to.

use std::io::Write;

use crate::config::SerialMode;
use crate::console_log::{ConsoleLog, CONSOLE_LOG_LIMIT};
use crate::console_socket::ConsoleSocket;
use crate::error::VmError;
use crate::event_loop::SerialInput;

/// COM1's output, and where its input comes from.
pub(crate) struct SerialOutput {
    pub out: Box<dyn Write + Send>,
    pub input: SerialInput,
}

impl SerialOutput {
    pub fn open(mode: &SerialMode) -> Result<Self, VmError> {
        let serial_error = |path: &std::path::Path| {
            let path = path.to_path_buf();
            move |source| VmError::SerialFile { path, source }
        };
        Ok(match mode {
            SerialMode::Stdio => Self {
                out: Box::new(std::io::stdout()),
                input: SerialInput::Stdin,
            },
            SerialMode::File(path) => Self {
                out: Box::new(
                    ConsoleLog::open(path, CONSOLE_LOG_LIMIT).map_err(serial_error(path))?,
                ),
                input: SerialInput::None,
            },
            SerialMode::None => Self {
                out: Box::new(std::io::sink()),
                input: SerialInput::None,
            },
            SerialMode::Background { log, socket } => {
                let (sock, out) = ConsoleSocket::bind(socket, log).map_err(serial_error(socket))?;
                Self {
                    out: Box::new(out),
                    input: SerialInput::Socket(sock),
                }
            }
        })
    }
}
