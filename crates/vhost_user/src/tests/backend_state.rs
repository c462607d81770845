//! Back-end state transfer ([`crate::backend_state`]) against a fake back-end that speaks
//! the raw protocol on a socket pair: states saved through vessel's pipe and through the
//! back-end's own descriptor, a state loaded; and hostile answers — a state past the
//! limit, a back-end that never closes its end, or never replies to SET_DEVICE_STATE_FD or
//! CHECK_DEVICE_STATE, error codes, a "here is my fd" reply without one, a failed
//! CHECK_DEVICE_STATE, no DEVICE_STATE at all — each a typed error.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::thread::JoinHandle;
use std::time::Duration;

use vhost::vhost_user::Frontend;
use vmm_sys_util::sock_ctrl_msg::ScmSocket;

use crate::backend_state::{BackendStateError, Limits};
use crate::frontend::{DeviceConnection, PROTOCOL_FEATURES_BIT};

const GET_FEATURES: u32 = 1;
const GET_PROTOCOL_FEATURES: u32 = 15;
const SET_PROTOCOL_FEATURES: u32 = 16;
const SET_DEVICE_STATE_FD: u32 = 42;
const CHECK_DEVICE_STATE: u32 = 43;
const DEVICE_STATE: u64 = 1 << 19;
const INVALID_FD: u64 = 0x100;

/// How the fake answers SET_DEVICE_STATE_FD.
enum Answer {
    /// Use the frontend's pipe: write these bytes into it (save) or read it to EOF (load).
    Pipe(Vec<u8>),
    /// Reply with a pipe of our own whose other end gets these bytes.
    OwnFd(Vec<u8>),
    /// Reply with this value and no descriptor.
    Code(u64),
    /// Use the frontend's pipe but never write nor close it.
    Hold,
    /// Never reply.
    Silent,
}

struct Fake {
    offer_state: bool,
    answer: Answer,
    /// CHECK_DEVICE_STATE's reply ([`NO_REPLY`]: none).
    check: u64,
}

const NO_REPLY: u64 = u64::MAX;

/// (request, body, descriptor) of the next message; `None` once the frontend hung up.
fn receive(sock: &UnixStream) -> Option<(u32, Vec<u8>, Option<std::fs::File>)> {
    let mut hdr = [0u8; 12];
    let (n, file) = sock.recv_with_fd(&mut hdr[..]).ok()?;
    if n == 0 {
        return None;
    }
    assert_eq!(n, 12, "short header");
    let request = u32::from_le_bytes(hdr[0..4].try_into().unwrap());
    let size = u32::from_le_bytes(hdr[8..12].try_into().unwrap()) as usize;
    let mut body = vec![0u8; size];
    (&*sock).read_exact(&mut body).ok()?;
    Some((request, body, file))
}

fn reply(sock: &UnixStream, request: u32, value: u64, fd: Option<&OwnedFd>) {
    let mut msg = Vec::with_capacity(20);
    msg.extend_from_slice(&request.to_le_bytes());
    msg.extend_from_slice(&0x5u32.to_le_bytes()); // version 1, reply
    msg.extend_from_slice(&8u32.to_le_bytes());
    msg.extend_from_slice(&value.to_le_bytes());
    match fd {
        Some(fd) => sock.send_with_fd(&msg[..], fd.as_raw_fd()).unwrap(),
        None => (&*sock).write(&msg).unwrap(),
    };
}

fn pipe() -> (OwnedFd, OwnedFd) {
    let (r, w) = std::io::pipe().unwrap();
    (r.into(), w.into())
}

/// A connection that has done the handshake with `fake`, and the fake's thread, which
/// returns what it read from a load.
fn connect(fake: Fake) -> (DeviceConnection, JoinHandle<Vec<u8>>) {
    let (ours, theirs) = UnixStream::pair().unwrap();
    let thread = std::thread::spawn(move || serve(theirs, fake));
    let mut conn = DeviceConnection::from_frontend(Frontend::from_stream(ours, 2));
    conn.handshake(0, 1).unwrap();
    (conn, thread)
}

fn serve(sock: UnixStream, fake: Fake) -> Vec<u8> {
    let mut loaded = Vec::new();
    let mut held = Vec::new();
    while let Some((request, body, file)) = receive(&sock) {
        match request {
            GET_FEATURES => reply(&sock, request, PROTOCOL_FEATURES_BIT, None),
            GET_PROTOCOL_FEATURES => {
                let offered = if fake.offer_state { DEVICE_STATE } else { 0 };
                reply(&sock, request, offered, None);
            }
            SET_PROTOCOL_FEATURES => {
                let acked = u64::from_le_bytes(body[..8].try_into().unwrap());
                assert_eq!(acked & !DEVICE_STATE, 0, "acked what was not offered");
            }
            SET_DEVICE_STATE_FD => {
                let mut file = file.expect("SET_DEVICE_STATE_FD without a descriptor");
                let load = body[0] == 1;
                match &fake.answer {
                    Answer::Pipe(bytes) => {
                        reply(&sock, request, INVALID_FD, None);
                        if load {
                            file.read_to_end(&mut loaded).unwrap();
                        } else {
                            let bytes = bytes.clone();
                            // A writer that outlives a frontend that gave up reading.
                            std::thread::spawn(move || file.write_all(&bytes));
                        }
                    }
                    Answer::OwnFd(bytes) => {
                        let (r, w) = pipe();
                        reply(&sock, request, 0, Some(&r));
                        std::fs::File::from(w).write_all(bytes).unwrap();
                    }
                    Answer::Code(value) => reply(&sock, request, *value, None),
                    Answer::Hold => {
                        reply(&sock, request, INVALID_FD, None);
                        held.push(file);
                    }
                    Answer::Silent => held.push(file),
                }
            }
            CHECK_DEVICE_STATE if fake.check == NO_REPLY => {}
            CHECK_DEVICE_STATE => reply(&sock, request, fake.check, None),
            _ => {} // SET_OWNER
        }
    }
    loaded
}

fn fake(answer: Answer) -> Fake {
    Fake {
        offer_state: true,
        answer,
        check: 0,
    }
}

#[test]
fn a_state_is_saved_through_the_pipe_or_the_backends_descriptor() {
    let state: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
    let (conn, fake_thread) = connect(fake(Answer::Pipe(state.clone())));
    assert!(conn.state_transfer());
    assert_eq!(conn.save_backend_state(Limits::default()).unwrap(), state);
    drop(conn);
    fake_thread.join().unwrap();

    let (conn, fake_thread) = connect(fake(Answer::OwnFd(b"theirs".to_vec())));
    assert_eq!(
        conn.save_backend_state(Limits::default()).unwrap(),
        b"theirs"
    );
    drop(conn);
    fake_thread.join().unwrap();
}

#[test]
fn a_state_is_loaded_through_the_pipe() {
    let state: Vec<u8> = (0..300_000u32).map(|i| (i * 7) as u8).collect();
    let (conn, fake_thread) = connect(fake(Answer::Pipe(Vec::new())));
    conn.load_backend_state(&state, Limits::default()).unwrap();
    drop(conn);
    assert_eq!(fake_thread.join().unwrap(), state);
}

#[test]
fn hostile_backends_get_typed_errors() {
    let small = Limits {
        max_len: 1000,
        timeout: Duration::from_millis(300),
    };
    let save = |answer, check| {
        let (conn, _thread) = connect(Fake {
            offer_state: true,
            answer,
            check,
        });
        conn.save_backend_state(small).unwrap_err()
    };
    let err = save(Answer::Pipe(vec![0; 1001]), 0);
    assert!(
        matches!(err, BackendStateError::TooLarge { limit: 1000 }),
        "{err}"
    );
    let err = save(Answer::OwnFd(vec![0; 5000]), 0);
    assert!(matches!(err, BackendStateError::TooLarge { .. }), "{err}");
    let err = save(Answer::Hold, 0);
    assert!(matches!(err, BackendStateError::Timeout(_)), "{err}");
    // An error code, and "success, here is my descriptor" without one.
    for code in [0x101, 1, 0] {
        let err = save(Answer::Code(code), 0);
        assert!(
            matches!(
                err,
                BackendStateError::Message {
                    step: "SET_DEVICE_STATE_FD",
                    ..
                }
            ),
            "{code:#x}: {err}"
        );
    }
    let err = save(Answer::Pipe(b"ok".to_vec()), 7);
    assert!(matches!(err, BackendStateError::Failed("save")), "{err}");
    // A back-end that never replies to either message: the same bound, not a hang.
    for (answer, check) in [
        (Answer::Silent, 0),
        (Answer::Pipe(b"ok".to_vec()), NO_REPLY),
    ] {
        let started = std::time::Instant::now();
        let err = save(answer, check);
        assert!(matches!(err, BackendStateError::Timeout(_)), "{err}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }
    let (conn, _thread) = connect(Fake {
        offer_state: true,
        answer: Answer::Pipe(Vec::new()),
        check: NO_REPLY,
    });
    let err = conn.load_backend_state(b"x", small).unwrap_err();
    assert!(matches!(err, BackendStateError::Timeout(_)), "{err}");

    let (conn, _thread) = connect(fake(Answer::Pipe(Vec::new())));
    let err = conn.load_backend_state(&[0; 1001], small).unwrap_err();
    assert!(
        matches!(err, BackendStateError::LoadTooLarge { len: 1001, .. }),
        "{err}"
    );

    let (conn, _thread) = connect(Fake {
        offer_state: false,
        answer: Answer::Code(0),
        check: 0,
    });
    assert!(!conn.state_transfer());
    let err = conn.save_backend_state(small).unwrap_err();
    assert!(matches!(err, BackendStateError::Unsupported), "{err}");
    let err = conn.load_backend_state(b"x", small).unwrap_err();
    assert!(matches!(err, BackendStateError::Unsupported), "{err}");
}
