//! The framed protocol between the containerd shim and `vessel-agent` (crates/agent): the
//! shim reads the guest's frames (the guest is hostile), the agent the host's. Never a
//! panic; every message the host sends validates before the agent uses it.
//!
//! Input: the first byte picks the direction. Even: the rest is a stream of guest → host
//! frames (`AgentMessage`), read until the stream ends or a frame is refused. Odd: host →
//! guest frames (`HostMessage`), each container, process and limits validated.
#![no_main]

use agent::protocol::{read_frame, valid_id, valid_signal, AgentMessage, HostMessage};
use libfuzzer_sys::fuzz_target;

fn host_message(m: &HostMessage) {
    match m {
        HostMessage::Run { container } => drop(container.validate()),
        HostMessage::Container { id, container } => {
            valid_id(id);
            drop(container.validate());
        }
        HostMessage::Exec { id, process } => {
            valid_id(id);
            drop(process.validate());
        }
        HostMessage::Update { limits } => drop(limits.validate()),
        HostMessage::Signal { signal } => drop(valid_signal(*signal)),
        _ => {}
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, mut rest)) = data.split_first() else {
        return;
    };
    if mode % 2 == 0 {
        while let Ok(Some(m)) = read_frame::<_, AgentMessage>(&mut rest) {
            if let AgentMessage::Attach { id } = &m {
                valid_id(id);
            }
        }
    } else {
        while let Ok(Some(m)) = read_frame::<_, HostMessage>(&mut rest) {
            host_message(&m);
        }
    }
});
