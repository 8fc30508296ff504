//! Accepting and serving connections (HTTP/1.1), with limits a slow or idle
//! client cannot outlast: a deadline for each request's headers (which also
//! closes a keep-alive connection idle that long), request bodies that must
//! keep arriving, and a cap on open connections (so clients cannot use up the
//! process's file descriptors).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes, HttpBody};
use http_body::{Frame, SizeHint};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::time::{Instant, Sleep};

use crate::Shutdown;

/// Serves `router` on `listener` until `shutdown`: then stops accepting, lets
/// each connection finish its request in flight, and returns when all have.
/// At most `max_connections` are served at once; each request's headers must
/// arrive within `header_timeout` of the connection waiting for them.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: Shutdown,
    header_timeout: Duration,
    max_connections: usize,
) {
    let permits = Arc::new(Semaphore::new(max_connections.max(1)));
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
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                // Out of descriptors or a connection reset before it was
                // accepted: try again shortly.
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
            () = shutdown.wait() => break,
        };
        let service = TowerToHyperService::new(router.clone());
        let mut closing_rx = closing_rx.clone();
        connections.spawn(async move {
            let _permit = permit;
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout);
            let conn = builder.serve_connection(TokioIo::new(stream), service);
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
    while connections.join_next().await.is_some() {}
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
