//! The accept loop: HTTP/1.1 connections served by hyper with the limits `axum::serve` cannot set.
//!
//! `axum::serve` gives a client unlimited time to send its headers, keeps idle connections open
//! forever and accepts hyper's default header limits, so a few slow clients (slow-loris: a header
//! line every few seconds, or a connection that never sends anything) hold sockets and tasks
//! indefinitely. Here every connection gets:
//! - `TCP_NODELAY` (small SSE writes must not wait for the client's delayed ACK);
//! - a header read timeout: a request's headers must be complete within it, counted from their
//!   first byte (or from the accept, for a connection that has not sent anything yet);
//! - an idle timeout: a kept-alive connection with no request in flight is closed after it;
//! - caps on the header block's size and on the number of headers (hyper answers 431).
//!
//! hyper's own `header_read_timeout` is not used: its timer starts as soon as a kept-alive
//! connection goes idle, so it would close idle connections after the header timeout and leave
//! no separate idle timeout. Instead each connection counts the requests in flight (a guard that
//! lives until hyper drops the response body) and notes when the bytes of a new request began.

use std::convert::Infallible;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, Response};
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::Instant;

/// Per-connection limits (`[server]` in the config).
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    pub header_read_timeout: Duration,
    pub keep_alive_timeout: Duration,
    pub max_header_bytes: usize,
    pub max_headers: usize,
}

/// Serves `app` on `listener` until `stop` turns true, then stops accepting, lets every
/// connection finish its request in flight (hyper's graceful shutdown) and returns once all are
/// closed. The caller bounds that wait (`server.shutdown_grace`).
pub async fn serve(listener: TcpListener, app: axum::Router, limits: ConnLimits, mut stop: watch::Receiver<bool>) {
    let (close_tx, close_rx) = watch::channel(());
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = stop.wait_for(|s| *s) => break,
        };
        let tcp = match accepted {
            Ok((tcp, _peer)) => tcp,
            Err(e) if is_connection_error(&e) => continue,
            Err(e) => {
                // out of file descriptors and the like: back off instead of spinning
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY on an accepted connection");
        }
        tokio::spawn(connection(tcp, app.clone(), limits, stop.clone(), close_rx.clone()));
    }
    drop(listener);
    drop(close_rx);
    close_tx.closed().await;
}

fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset
    )
}

async fn connection(
    tcp: TcpStream,
    app: axum::Router,
    limits: ConnLimits,
    mut stop: watch::Receiver<bool>,
    _open: watch::Receiver<()>,
) {
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Watched { inner: tcp, activity: activity.clone() });
    let router = TowerToHyperService::new(app);
    let act = activity.clone();
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let guard = act.begin();
        let fut = hyper::service::Service::call(&router, req);
        async move {
            let resp: Response<Body> = fut.await?;
            Ok::<_, Infallible>(resp.map(|inner| GuardedBody { inner, _guard: guard }))
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.header_read_timeout(None).max_header_size(limits.max_header_bytes).max_headers(limits.max_headers);
    let mut conn = std::pin::pin!(builder.serve_connection(io, service));
    let mut stopping = false;
    loop {
        let deadline = activity.deadline(&limits).unwrap_or_else(|| Instant::now() + limits.keep_alive_timeout);
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                break;
            }
            _ = stop.wait_for(|s| *s), if !stopping => {
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = tokio::time::sleep_until(deadline) => {
                if let Some(why) = activity.expired(&limits) {
                    tracing::debug!(reason = why, "closing connection");
                    break;
                }
            }
        }
    }
}

/// What one connection is doing, for its timeouts.
struct Activity(Mutex<ActState>);

struct ActState {
    /// Requests whose response has not been fully written (or dropped) yet.
    in_flight: usize,
    /// Since when nothing is in flight (the accept, or the end of the last response).
    idle_since: Instant,
    /// When the first byte of the next request arrived, while nothing was in flight.
    head_started: Option<Instant>,
    /// Whether any request has been served: before that, an idle connection is a client that
    /// connected and sent nothing, and gets only the header timeout.
    served_any: bool,
}

impl Activity {
    fn new() -> Self {
        Activity(Mutex::new(ActState {
            in_flight: 0,
            idle_since: Instant::now(),
            head_started: None,
            served_any: false,
        }))
    }

    fn on_read(&self) {
        let mut s = self.0.lock();
        if s.in_flight == 0 && s.head_started.is_none() {
            s.head_started = Some(Instant::now());
        }
    }

    fn begin(self: &Arc<Self>) -> InFlight {
        let mut s = self.0.lock();
        s.in_flight += 1;
        s.head_started = None;
        s.served_any = true;
        InFlight(self.clone())
    }

    /// When the connection should be closed if nothing changes; `None` while a request is in flight
    /// (the request timeout bounds that).
    fn deadline(&self, l: &ConnLimits) -> Option<Instant> {
        let s = self.0.lock();
        if s.in_flight > 0 {
            return None;
        }
        Some(match s.head_started {
            Some(t) => t + l.header_read_timeout,
            None if !s.served_any => s.idle_since + l.header_read_timeout,
            None => s.idle_since + l.keep_alive_timeout,
        })
    }

    fn expired(&self, l: &ConnLimits) -> Option<&'static str> {
        let at = self.deadline(l)?;
        if Instant::now() < at {
            return None;
        }
        let s = self.0.lock();
        Some(if s.head_started.is_some() || !s.served_any {
            "request headers not received within server.header_read_timeout"
        } else {
            "idle longer than server.keep_alive_timeout"
        })
    }
}

/// A request in flight; dropped with its response body (or its handler, if the client left).
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut s = self.0 .0.lock();
        s.in_flight = s.in_flight.saturating_sub(1);
        if s.in_flight == 0 {
            s.idle_since = Instant::now();
            s.head_started = None;
        }
    }
}

/// A response body that keeps its request counted as in flight until hyper is done with it.
struct GuardedBody {
    inner: Body,
    _guard: InFlight,
}

impl hyper::body::Body for GuardedBody {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The socket, noting when bytes arrive.
struct Watched {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.activity.on_read();
        }
        r
    }
}

impl AsyncWrite for Watched {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
