//! The HTTP/1.1 server: its own thread running a current-thread tokio runtime, hyper serving
//! each connection, request bodies read up to a bound, and the state machine run on a blocking
//! worker so a slow backend call never stalls the socket.

use std::convert::Infallible;
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_LENGTH, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use thiserror::Error;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{oneshot, Semaphore};

use crate::backend::VmmBackend;
use crate::controller::metrics::METRICS_FLUSH_INTERVAL;
use crate::controller::{ApiReply, ApiRequest, InstanceIdentity, VmController};
use crate::fd_stream::{self, FdStream};
use crate::model::{FullVmConfig, InstanceState, VmConfigSnapshot};
use crate::routes::parse_request;
use crate::socket::{bind_api_socket, remove_api_socket, SocketError};

/// Firecracker accepts bodies up to 51,200 bytes; vessel allows 64 KiB.
pub const DEFAULT_MAX_BODY_BYTES: usize = 64 * 1024;
/// Connections served at once; more wait in the socket's backlog.
pub const DEFAULT_MAX_CONNECTIONS: usize = 64;
/// Default for [`ServerOptions::read_timeout`] (hyper's own default for headers).
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// How long shutdown waits for a backend call that is still running.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

#[derive(Debug, Error)]
pub enum ApiError {
    #[error(transparent)]
    Socket(#[from] SocketError),
    #[error("cannot create the API server's runtime: {0}")]
    Runtime(io::Error),
    #[error("cannot register the API socket with the runtime: {0}")]
    Listener(io::Error),
    #[error("cannot spawn the API server thread: {0}")]
    SpawnThread(io::Error),
    #[error("the API server thread panicked")]
    ServerThreadPanicked,
}

/// How the server presents itself and what it accepts.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    pub identity: InstanceIdentity,
    /// Larger request bodies get `413 Payload Too Large`.
    pub max_body_bytes: usize,
    pub max_connections: usize,
    /// A client must send a request's headers, and then its body, each within this time, or
    /// its connection is closed (headers) or answered `408` (body). An idle keep-alive
    /// connection is closed after this time too.
    pub read_timeout: Duration,
    /// The VM already runs with this configuration (a VMM started from a VM definition):
    /// the API starts in the Running state and serves only run-time requests.
    pub running: Option<VmConfigSnapshot>,
    /// The largest MMDS document `PUT/PATCH /mmds` accept, serialized (Firecracker's
    /// `--mmds-size-limit`).
    pub mmds_size_limit: usize,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            identity: InstanceIdentity::default(),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            read_timeout: DEFAULT_READ_TIMEOUT,
            running: None,
            mmds_size_limit: mmds::DEFAULT_SIZE_LIMIT,
        }
    }
}

struct Shared {
    controller: Mutex<VmController>,
    /// The controller's backend, for the requests answered while the controller is busy
    /// (migration progress and cancellation during a send).
    backend: Arc<dyn VmmBackend>,
    max_body_bytes: usize,
    read_timeout: Duration,
}

impl Shared {
    /// The controller, even if a backend call panicked while holding it: its state is only
    /// changed after a backend call succeeds, so it is consistent.
    fn controller(&self) -> MutexGuard<'_, VmController> {
        self.controller
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The running server. Dropping it stops the server too.
pub struct ApiServerHandle {
    socket_path: PathBuf,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
    shared: Arc<Shared>,
}

impl ApiServerHandle {
    pub fn socket_path(&self) -> &Path {
        &self.socket_path
    }

    /// The instance state as `GET /` reports it (waits while a backend call is running).
    pub fn state(&self) -> InstanceState {
        self.shared.controller().state()
    }

    /// The configuration as `GET /vm/config` reports it.
    pub fn config(&self) -> FullVmConfig {
        self.shared.controller().full_config()
    }

    /// Stops accepting, closes open connections, removes the socket file and joins the
    /// server thread.
    pub fn shutdown(mut self) -> Result<(), ApiError> {
        self.stop()
    }

    fn stop(&mut self) -> Result<(), ApiError> {
        if let Some(sender) = self.shutdown.take() {
            // The server may already have stopped on its own; then there is nobody to tell.
            let _ = sender.send(());
        }
        match self.thread.take() {
            Some(thread) => thread.join().map_err(|_| ApiError::ServerThreadPanicked),
            None => Ok(()),
        }
    }
}

impl Drop for ApiServerHandle {
    fn drop(&mut self) {
        // A panicked server thread has nothing left to clean up.
        let _ = self.stop();
    }
}

/// Serves the API on `socket_path` from a new thread and returns once the socket accepts
/// connections. Fails if another live server owns the socket or the path is not a socket.
pub fn serve(
    socket_path: &Path,
    backend: Arc<dyn VmmBackend>,
    options: ServerOptions,
) -> Result<ApiServerHandle, ApiError> {
    let (std_listener, socket_identity) = bind_api_socket(socket_path)?;
    let cleanup_on_error = |err: ApiError| {
        remove_api_socket(socket_path, socket_identity);
        err
    };
    std_listener
        .set_nonblocking(true)
        .map_err(|e| cleanup_on_error(ApiError::Listener(e)))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .thread_name("vessel-api-worker")
        .build()
        .map_err(|e| cleanup_on_error(ApiError::Runtime(e)))?;
    let listener = {
        let _entered = runtime.enter();
        UnixListener::from_std(std_listener).map_err(|e| cleanup_on_error(ApiError::Listener(e)))?
    };
    let mut controller = match options.running {
        Some(config) => VmController::running(options.identity, backend.clone(), config),
        None => VmController::new(options.identity, backend.clone()),
    };
    controller.set_mmds_size_limit(options.mmds_size_limit);
    let shared = Arc::new(Shared {
        controller: Mutex::new(controller),
        backend,
        max_body_bytes: options.max_body_bytes,
        read_timeout: options.read_timeout,
    });
    let (shutdown_tx, shutdown_rx) = oneshot::channel();
    let thread_shared = shared.clone();
    let thread_path = socket_path.to_path_buf();
    let max_connections = options.max_connections.max(1);
    let thread = std::thread::Builder::new()
        .name("vessel-api".to_string())
        .spawn(move || {
            if let Err(e) = confine::enter(confine::Role::Api) {
                eprintln!("vessel: error: confining the API thread: {e}");
                std::process::exit(6);
            }
            runtime.block_on(accept_loop(
                listener,
                thread_shared,
                max_connections,
                shutdown_rx,
            ));
            runtime.shutdown_timeout(SHUTDOWN_GRACE);
            remove_api_socket(&thread_path, socket_identity);
        })
        .map_err(|e| cleanup_on_error(ApiError::SpawnThread(e)))?;
    Ok(ApiServerHandle {
        socket_path: socket_path.to_path_buf(),
        shutdown: Some(shutdown_tx),
        thread: Some(thread),
        shared,
    })
}

async fn accept_loop(
    listener: UnixListener,
    shared: Arc<Shared>,
    max_connections: usize,
    mut shutdown: oneshot::Receiver<()>,
) {
    let slots = Arc::new(Semaphore::new(max_connections));
    // Told to the connections at shutdown: each finishes the request it is handling (its
    // reply is written) and closes; idle ones close at once.
    let (stopping, stopping_rx) = tokio::sync::watch::channel(false);
    let drain = |slots: Arc<Semaphore>| async move {
        let _ = stopping.send(true);
        let all = u32::try_from(max_connections).unwrap_or(u32::MAX);
        let _ = tokio::time::timeout(SHUTDOWN_GRACE, slots.acquire_many(all)).await;
    };
    let mut metrics_timer = tokio::time::interval_at(
        tokio::time::Instant::now() + METRICS_FLUSH_INTERVAL,
        METRICS_FLUSH_INTERVAL,
    );
    loop {
        let slot = tokio::select! {
            _ = &mut shutdown => return drain(slots).await,
            _ = metrics_timer.tick() => {
                shared.controller().flush_metrics_periodically();
                continue;
            }
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => return,
            },
        };
        let stream = tokio::select! {
            _ = &mut shutdown => {
                drop(slot);
                return drain(slots).await;
            }
            _ = metrics_timer.tick() => {
                shared.controller().flush_metrics_periodically();
                continue;
            }
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(_) => {
                    // Out of file descriptors or the like: give the system a moment.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
        };
        let connection_shared = shared.clone();
        let connection_stopping = stopping_rx.clone();
        tokio::spawn(async move {
            serve_connection(stream, connection_shared, connection_stopping).await;
            drop(slot);
        });
    }
}

async fn serve_connection(
    stream: UnixStream,
    shared: Arc<Shared>,
    mut stopping: tokio::sync::watch::Receiver<bool>,
) {
    let read_timeout = shared.read_timeout;
    let (stream, fds) = FdStream::new(stream);
    let service =
        service_fn(move |request| handle_request(request, shared.clone(), fd_stream::take(&fds)));
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(read_timeout)
        .serve_connection(TokioIo::new(stream), service);
    let mut connection = std::pin::pin!(connection);
    // A client that hangs up or sends garbage only ends its own connection.
    tokio::select! {
        _ = connection.as_mut() => return,
        _ = stopping.wait_for(|s| *s) => {}
    }
    // The VMM is ending (a migrated VM's too): the request in progress still gets its
    // reply, the connection then closes.
    connection.as_mut().graceful_shutdown();
    let _ = connection.await;
}

/// Serves one request; `passed` is the descriptor the client sent with it (SCM_RIGHTS),
/// which only adding a port forward uses.
async fn handle_request(
    request: Request<Incoming>,
    shared: Arc<Shared>,
    passed: Option<OwnedFd>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let method = request.method().as_str().to_string();
    let path = request.uri().path().to_string();
    let limit = shared.max_body_bytes;
    if declared_length(&request).is_some_and(|length| length > limit as u64) {
        return Ok(body_too_large(limit));
    }
    let reading = Limited::new(request.into_body(), limit).collect();
    let body = match tokio::time::timeout(shared.read_timeout, reading).await {
        Err(_elapsed) => {
            return Ok(fault(
                StatusCode::REQUEST_TIMEOUT,
                "The request body did not arrive in time.".to_string(),
            ))
        }
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(err)) if err.downcast_ref::<LengthLimitError>().is_some() => {
            return Ok(body_too_large(limit))
        }
        Ok(Err(err)) => {
            return Ok(fault(
                StatusCode::BAD_REQUEST,
                format!("Failed to read the request body: {err}"),
            ))
        }
    };
    let body = (!body.is_empty()).then_some(&body[..]);
    let api_request = match parse_request(&method, &path, body) {
        Ok(api_request) => api_request,
        Err(err) => return Ok(fault(StatusCode::BAD_REQUEST, err.to_string())),
    };
    let outcome = tokio::task::spawn_blocking(move || match api_request {
        ApiRequest::Forward(request) => shared.controller().forward_request(request, passed),
        // Answered while a migration holds the controller.
        ApiRequest::GetMigration => {
            crate::controller::migration::migration_status(shared.backend.as_ref())
        }
        ApiRequest::CancelMigration => {
            crate::controller::migration::cancel_migration(shared.backend.as_ref())
        }
        other => shared.controller().handle(other),
    })
    .await;
    Ok(match outcome {
        Ok(Ok(ApiReply::NoContent)) => empty(StatusCode::NO_CONTENT),
        Ok(Ok(ApiReply::Json(body))) => json(StatusCode::OK, body),
        Ok(Err(err)) => fault(
            StatusCode::from_u16(err.status_code()).unwrap_or(StatusCode::BAD_REQUEST),
            err.to_string(),
        ),
        Err(_) => fault(
            StatusCode::INTERNAL_SERVER_ERROR,
            "The VMM failed while handling the request.".to_string(),
        ),
    })
}

fn declared_length(request: &Request<Incoming>) -> Option<u64> {
    request
        .headers()
        .get(CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn body_too_large(limit: usize) -> Response<Full<Bytes>> {
    fault(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("The request body is larger than the limit of {limit} bytes."),
    )
}

fn fault(status: StatusCode, message: String) -> Response<Full<Bytes>> {
    let body = serde_json::json!({ "fault_message": message }).to_string();
    json(status, body.into_bytes())
}

fn json(status: StatusCode, body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn empty(status: StatusCode) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = status;
    response
}
