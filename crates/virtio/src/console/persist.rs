//! virtio-console's snapshot state: the terminal size the configuration space shows and
//! the host input not yet delivered to the guest. The host side (where output goes) is
//! not saved: the VMM opens it again as configured and passes it in.

use serde::{Deserialize, Serialize};
use std::io::Write;

use super::{Console, INPUT_CAPACITY};
use crate::persist::{check_version, Persist, PersistError};
use crate::processor::lock;

/// Format version of [`ConsoleState`].
pub const CONSOLE_STATE_VERSION: u32 = 1;
const DEVICE: &str = "virtio-console";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsoleState {
    pub version: u32,
    pub cols: u16,
    pub rows: u16,
    /// Host input queued for the guest and not yet delivered (at most 64 KiB).
    pub input: Vec<u8>,
}

/// What the host gives a restored console: where its output goes.
pub struct ConsoleArgs {
    pub output: Box<dyn Write + Send>,
}

impl Persist for Console {
    type State = ConsoleState;
    type ConstructorArgs = ConsoleArgs;
    type Error = PersistError;

    fn save(&self) -> ConsoleState {
        let host = lock(&self.host);
        ConsoleState {
            version: CONSOLE_STATE_VERSION,
            cols: host.cols,
            rows: host.rows,
            input: host.input.iter().copied().collect(),
        }
    }

    fn restore(args: ConsoleArgs, state: &ConsoleState) -> Result<Self, PersistError> {
        check_version(DEVICE, state.version, CONSOLE_STATE_VERSION)?;
        if state.input.len() > INPUT_CAPACITY {
            return Err(PersistError::Invalid {
                device: DEVICE,
                reason: format!(
                    "{} bytes of pending input, more than its {INPUT_CAPACITY}-byte buffer",
                    state.input.len()
                ),
            });
        }
        let (console, handle) = Console::new(args.output, state.cols, state.rows);
        handle.push_input(&state.input);
        Ok(console)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> ConsoleArgs {
        ConsoleArgs {
            output: Box::new(std::io::sink()),
        }
    }

    fn saved() -> ConsoleState {
        let (console, handle) = Console::new(Box::new(std::io::sink()), 132, 43);
        handle.push_input(b"typed ahead");
        console.save()
    }

    #[test]
    fn save_restore_save_is_the_same_state() {
        let state = saved();
        assert_eq!(state.input, b"typed ahead");
        let json = serde_json::to_vec(&state).unwrap();
        let back: ConsoleState = serde_json::from_slice(&json).unwrap();
        let console = Console::restore(args(), &back).unwrap();
        assert_eq!(console.save(), state);
        let mut size = [0u8; 4];
        crate::VirtioDevice::read_config(&console, 0, &mut size);
        assert_eq!(size, [132, 0, 43, 0]);
    }

    #[test]
    fn hostile_states_are_refused_with_the_reason() {
        let mut s = saved();
        s.version = 0;
        let err = Console::restore(args(), &s).map(|_| ()).unwrap_err();
        assert!(err.to_string().contains("version 0"), "{err}");
        let mut s = saved();
        s.input = vec![b'x'; INPUT_CAPACITY + 1];
        let err = Console::restore(args(), &s).map(|_| ()).unwrap_err();
        assert!(err.to_string().contains("pending input"), "{err}");
    }
}
