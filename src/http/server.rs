//! The accept loop behind `http.listen`: a cap on connections and the timeouts that keep slow,
//! stalled or idle clients from holding the port (the callback faces the internet).

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderValue, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use crate::config::HttpSettings;

/// Largest request line plus headers: WeChat's are a few hundred bytes. Over it: 431.
const MAX_HEAD_BYTES: usize = 16 * 1024;

/// The server's limits, from `[http]`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    pub(crate) header_read_timeout: Duration,
    pub(crate) request_timeout: Duration,
    pub(crate) idle_timeout: Duration,
    pub(crate) max_connections: usize,
}

impl From<&HttpSettings> for Limits {
    fn from(s: &HttpSettings) -> Self {
        Self {
            header_read_timeout: s.header_read_timeout.get(),
            request_timeout: s.request_timeout.get(),
            idle_timeout: s.idle_timeout.get(),
            max_connections: s.max_connections.get(),
        }
    }
}

/// Serves `app` on `listener` until `stop` fires, each connection a task on `tasks`. A
/// connection is accepted only with a free slot, so beyond `max_connections` clients wait in
/// the kernel's backlog instead of costing a task, buffers and a file descriptor each.
pub(crate) async fn run(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    stop: CancellationToken,
    tasks: TaskTracker,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    loop {
        let slot = tokio::select! {
            _ = stop.cancelled() => return,
            slot = slots.clone().acquire_owned() => slot.expect("the slots are never closed"),
        };
        let stream = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors, or a connection reset before it was taken: wait
                    // a moment instead of spinning, then go on serving.
                    tracing::warn!(error = %e, "http accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let (app, stop) = (app.clone(), stop.clone());
        tasks.spawn(async move {
            connection(stream, app, limits, stop).await;
            drop(slot);
        });
    }
}

/// One connection, until the client closes it, a limit closes it, or `stop` drains it.
async fn connection(stream: TcpStream, app: Router, limits: Limits, stop: CancellationToken) {
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Watched {
        inner: stream,
        activity: activity.clone(),
    });
    let service = {
        let activity = activity.clone();
        hyper::service::service_fn(move |request: Request<Incoming>| {
            let (app, busy) = (app.clone(), Busy::enter(&activity));
            async move {
                let _busy = busy;
                let answer = tokio::time::timeout(
                    limits.request_timeout,
                    app.oneshot(request.map(Body::new)),
                )
                .await;
                Ok::<_, Infallible>(match answer {
                    Ok(Ok(response)) => response,
                    Ok(Err(never)) => match never {},
                    Err(_) => too_slow(),
                })
            }
        })
    };
    // The header-read timer runs from the moment a head is awaited, on a new connection or
    // after a response, and is not reset by each byte: a slowloris gets the same time as
    // anyone else to send its whole head.
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_header_size(MAX_HEAD_BYTES);
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    let mut draining = false;
    loop {
        let check_at = activity.last() + limits.idle_timeout;
        tokio::select! {
            done = conn.as_mut() => {
                if let Err(e) = done {
                    tracing::debug!(error = %e, "http connection ended");
                }
                return;
            }
            _ = stop.cancelled(), if !draining => {
                // Finishes the request in hand, then closes; an idle connection closes now.
                draining = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = tokio::time::sleep_until(check_at) => {
                if activity.busy() {
                    // A request is being answered (the request timeout bounds it).
                    activity.touch();
                } else if activity.last().elapsed() >= limits.idle_timeout {
                    tracing::debug!("closing an idle http connection");
                    return;
                }
            }
        }
    }
}

/// The answer to a request that ran past `http.request_timeout`; the connection is closed
/// after it, since the rest of a slow body may still be on its way.
fn too_slow() -> Response<Body> {
    let mut response = Response::new(Body::from("the request took too long"));
    *response.status_mut() = StatusCode::REQUEST_TIMEOUT;
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// When a connection last moved a byte, and how many of its requests are being answered.
struct Activity {
    start: Instant,
    last_ms: AtomicU64,
    busy: AtomicUsize,
}

impl Activity {
    fn new() -> Self {
        Self {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
            busy: AtomicUsize::new(0),
        }
    }

    fn touch(&self) {
        let ms = self.start.elapsed().as_millis() as u64;
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }

    fn busy(&self) -> bool {
        self.busy.load(Ordering::Relaxed) > 0
    }
}

/// Marks a request as being answered while it lives.
struct Busy(Arc<Activity>);

impl Busy {
    fn enter(activity: &Arc<Activity>) -> Self {
        activity.busy.fetch_add(1, Ordering::Relaxed);
        Self(activity.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.touch();
        self.0.busy.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A socket that records each byte it moves in its [`Activity`].
struct Watched {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
