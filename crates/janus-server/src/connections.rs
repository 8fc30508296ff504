//! Accepting and serving connections (HTTP/1.1), with limits a slow or idle
//! client cannot outlast: a deadline for each request's headers (which also
//! closes a keep-alive connection idle that long), request bodies that must
//! keep arriving, and a cap on open connections (so clients cannot use up the
//! process's file descriptors).

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes, HttpBody};
use http_body::{Frame, SizeHint};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::{Instant, Sleep};

use crate::Shutdown;

/// How [`serve`] bounds its clients.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    /// Deadline for a request's headers, longest pause in a request body,
    /// longest a response may wait for the client to read.
    pub idle: Duration,
    /// Connections served at once.
    pub connections: usize,
    /// Connections from one address at once; more are closed on arrival.
    pub per_address: usize,
}

/// Descriptors kept for everything but connections (the listener, the
/// runtime, the files the server reads).
const RESERVED_DESCRIPTORS: u64 = 64;

/// How many connections the process's limit on open files allows, at most
/// `wanted`: the soft limit is raised first, toward the hard one, as far as
/// `wanted` connections need (a soft limit of 1024 is common, and past it
/// new connections and `/proc/meminfo` reads fail).
// (`rlim_t` is u64 on Linux and macOS, i64 on FreeBSD: read as u64.)
#[allow(clippy::unnecessary_cast)]
pub fn connections_allowed(wanted: usize) -> usize {
    #[cfg(unix)]
    {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes the limit into the struct it is given.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
            return wanted;
        }
        let need = (wanted as u64).saturating_add(RESERVED_DESCRIPTORS) as libc::rlim_t;
        if limit.rlim_cur != libc::RLIM_INFINITY && limit.rlim_cur < need {
            let raised = libc::rlimit {
                rlim_cur: need.min(limit.rlim_max),
                rlim_max: limit.rlim_max,
            };
            // SAFETY: setrlimit reads the struct it is given.
            if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
                limit.rlim_cur = raised.rlim_cur;
            }
        }
        if limit.rlim_cur == libc::RLIM_INFINITY {
            return wanted;
        }
        let allowed = (limit.rlim_cur as u64).saturating_sub(RESERVED_DESCRIPTORS);
        usize::try_from(allowed)
            .unwrap_or(usize::MAX)
            .clamp(1, wanted.max(1))
    }
    #[cfg(not(unix))]
    wanted
}

/// Serves `router` on `listener` until `shutdown`: then stops accepting, lets
/// each connection finish its request in flight, and returns when all have
/// or after [`SHUTDOWN_GRACE`].
pub async fn serve(listener: TcpListener, router: Router, shutdown: Shutdown, bounds: Bounds) {
    let permits = Arc::new(Semaphore::new(bounds.connections.max(1)));
    let per_address: Arc<Mutex<HashMap<IpAddr, usize>>> = Arc::default();
    let (closing, closing_rx) = tokio::sync::watch::channel(false);
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            () = shutdown.wait() => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                // Out of descriptors or a connection reset before it was
                // accepted: try again shortly.
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
            () = shutdown.wait() => break,
        };
        let Some(address) = AddressSlot::take(&per_address, peer.ip(), bounds.per_address) else {
            // One client cannot take every connection: closed at once.
            drop(stream);
            continue;
        };
        let service = TowerToHyperService::new(router.clone());
        let mut closing_rx = closing_rx.clone();
        connections.spawn(async move {
            let _held = (permit, address);
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(bounds.idle);
            let io = TokioIo::new(WriteStallTimeout::new(stream, bounds.idle));
            let conn = builder.serve_connection(io, service);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => return,
                _ = closing_rx.changed() => conn.as_mut().graceful_shutdown(),
            }
            let _ = conn.await;
        });
        while connections.try_join_next().is_some() {}
    }
    let _ = closing.send(true);
    // Requests in flight were cancelled with the work (their clients get an
    // error at once); what is left is flushing those answers. A client still
    // sending its body (up to the idle limit per pause) must not hold the
    // exit: after the grace period the rest are dropped.
    let drained = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(SHUTDOWN_GRACE, drained).await.is_err() {
        connections.abort_all();
        while connections.join_next().await.is_some() {}
    }
}

/// How long connections may take to finish once the server stops.
/// (Under `docker stop`'s 10 s and Kubernetes' 30 s before they kill.)
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// One of the connections an address holds; given back on drop.
struct AddressSlot {
    counts: Arc<Mutex<HashMap<IpAddr, usize>>>,
    ip: IpAddr,
}

impl AddressSlot {
    /// A slot for `ip`, unless it holds `max` connections already.
    fn take(counts: &Arc<Mutex<HashMap<IpAddr, usize>>>, ip: IpAddr, max: usize) -> Option<Self> {
        let mut map = counts.lock().unwrap_or_else(|e| e.into_inner());
        let n = map.entry(ip).or_insert(0);
        if *n >= max.max(1) {
            return None;
        }
        *n += 1;
        Some(Self {
            counts: counts.clone(),
            ip,
        })
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut map = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = map.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

/// A connection whose writes fail once they have waited `limit` for the
/// client to read (a client that stops reading would otherwise hold its
/// connection, and the response's memory, forever).
struct WriteStallTimeout {
    inner: TcpStream,
    limit: Duration,
    stalled: Option<Pin<Box<Sleep>>>,
}

impl WriteStallTimeout {
    fn new(inner: TcpStream, limit: Duration) -> Self {
        Self {
            inner,
            limit,
            stalled: None,
        }
    }

    /// A write's or flush's outcome: progress stops the stall's clock,
    /// `Pending` starts (or checks) it.
    fn track<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<std::io::Result<T>>,
    ) -> Poll<std::io::Result<T>> {
        if polled.is_pending() {
            return self.pending(cx);
        }
        self.stalled = None;
        polled
    }

    /// `Pending` from the socket: starts (or checks) the stall's clock.
    fn pending<T>(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<T>> {
        let limit = self.limit;
        let timer = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("the client read nothing for {} s", limit.as_secs()),
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncRead for WriteStallTimeout {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for WriteStallTimeout {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.track(cx, polled)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_flush(cx);
        self.track(cx, polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.track(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// A request body that fails when no data arrives for `idle` (from its
/// first read on), instead of holding its handler forever.
pub struct IdleTimeoutBody {
    inner: Body,
    idle: Duration,
    deadline: Option<Pin<Box<Sleep>>>,
}

impl IdleTimeoutBody {
    /// Wraps `inner`.
    pub fn new(inner: Body, idle: Duration) -> Self {
        Self {
            inner,
            idle,
            deadline: None,
        }
    }
}

impl HttpBody for IdleTimeoutBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = &mut *self;
        let idle = this.idle;
        let deadline = this
            .deadline
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                deadline.as_mut().reset(Instant::now() + idle);
                Poll::Ready(frame)
            }
            Poll::Pending => match deadline.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(axum::Error::new(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no request body data for {} s", idle.as_secs()),
                ))))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::{RESERVED_DESCRIPTORS, connections_allowed};

    fn open_files() -> libc::rlimit {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes the limit into the struct it is given.
        assert_eq!(
            unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) },
            0
        );
        limit
    }

    #[test]
    #[allow(clippy::unnecessary_cast)]
    fn connections_fit_under_the_open_file_limit() {
        assert_eq!(connections_allowed(8), 8);
        // More than any limit allows: the soft limit goes up as far as the
        // kernel lets it, and the connections stay under it.
        let many = connections_allowed(1 << 40);
        let after = open_files();
        assert!(after.rlim_cur <= after.rlim_max);
        if after.rlim_cur != libc::RLIM_INFINITY {
            assert_eq!(
                many as u64,
                (after.rlim_cur as u64)
                    .saturating_sub(RESERVED_DESCRIPTORS)
                    .max(1)
            );
        }
        assert!(many >= 8, "{many}");
    }
}
