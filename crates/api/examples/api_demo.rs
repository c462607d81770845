//! Serves the API on a socket with a backend that only prints what it is asked to do, to try
//! the API with curl or a Firecracker client without booting anything:
//!
//! ```text
//! cargo run -p api --example api_demo -- /tmp/vessel-demo.sock
//! curl --unix-socket /tmp/vessel-demo.sock http://localhost/
//! ```
//!
//! Stops on end of input (Ctrl+D) and removes the socket.

use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;

use api::{ServerOptions, VmConfigSnapshot, VmmBackend};

struct PrintingBackend;

impl VmmBackend for PrintingBackend {
    fn start(&self, config: &VmConfigSnapshot) -> Result<(), api::BackendError> {
        eprintln!("start: {config:#?}");
        Ok(())
    }
    fn send_ctrl_alt_del(&self) -> Result<(), api::BackendError> {
        eprintln!("send_ctrl_alt_del");
        Ok(())
    }
    fn pause(&self) -> Result<(), api::BackendError> {
        eprintln!("pause");
        Ok(())
    }
    fn resume(&self) -> Result<(), api::BackendError> {
        eprintln!("resume");
        Ok(())
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let socket = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .ok_or("usage: api_demo SOCKET_PATH")?;
    let handle = api::serve(&socket, Arc::new(PrintingBackend), ServerOptions::default())?;
    eprintln!("serving on {}; end input to stop", socket.display());
    let mut sink = Vec::new();
    std::io::stdin().read_to_end(&mut sink)?;
    handle.shutdown()?;
    Ok(())
}
