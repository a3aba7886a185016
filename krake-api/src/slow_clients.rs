//! Cutting connections whose client stopped reading.
//!
//! A watch stream is written only as fast as its client reads: once the
//! kernel's socket buffers are full, the connection's writes stay pending,
//! hyper stops polling the response body, and the stream never learns that
//! it fell behind (the [watch hub](crate::watch_hub) cuts a subscriber that
//! lags only when it is polled). Without a bound, a client that never reads
//! holds its connection, its buffers and its subscription forever.
//!
//! [`CutSlowClients`] wraps any [`axum::serve::Listener`] (plain TCP or
//! [`TlsListener`](crate::tls::TlsListener)) so that every accepted
//! connection gets a write timeout: a write (or flush) that stays pending
//! for longer than [`ApiConfig::write_timeout`](crate::ApiConfig::write_timeout)
//! fails with [`std::io::ErrorKind::TimedOut`], hyper closes the
//! connection, the response body (and with it the watch subscription) is
//! dropped. The cut is logged with its reason and counted in `/metrics`
//! (`krake_api_slow_clients_cut_total{reason="write_timeout"}`).
//!
//! The timeout measures how long the client read *nothing* while the server
//! had something to write, not how long a response takes: every write that
//! completes starts the clock again. A healthy client that reads (however
//! slowly it is fed, however long it stays idle between heartbeats) is never
//! cut.
//!
//! ```no_run
//! # async fn example(state: krake_api::ApiState) -> std::io::Result<()> {
//! use krake_api::slow_clients::CutSlowClients;
//! use krake_api::tls::PeerInfo;
//!
//! let tcp = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! let listener = CutSlowClients::from_state(tcp, &state);
//! let app = krake_api::router(state).into_make_service_with_connect_info::<PeerInfo>();
//! axum::serve(listener, app).await?;
//! # Ok(())
//! # }
//! ```

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::serve::Listener;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpSocket};
use tokio::time::{Instant, Sleep};

use crate::metrics::Metrics;
use crate::state::ApiState;

/// A TCP listener on `address` whose accepted connections have a kernel
/// send buffer of `send_buffer` bytes (`SO_SNDBUF`, which Linux passes from
/// the listening socket to the connections it accepts), or the kernel's
/// default autotuning with `None`. A smaller buffer makes the writes to a
/// client that stopped reading block sooner (and the write timeout start
/// counting) and bounds what such a client holds in kernel memory.
pub fn bind(address: SocketAddr, send_buffer: Option<usize>) -> io::Result<TcpListener> {
    let socket = if address.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    if let Some(bytes) = send_buffer {
        socket.set_send_buffer_size(u32::try_from(bytes).unwrap_or(u32::MAX))?;
    }
    socket.bind(address)?;
    socket.listen(4096)
}

/// A listener whose connections are closed when their client stops reading;
/// see the module docs.
#[derive(Debug)]
pub struct CutSlowClients<L> {
    inner: L,
    timeout: Duration,
    metrics: Arc<Metrics>,
}

impl<L: Listener> CutSlowClients<L> {
    /// Wraps `inner`: a write pending for longer than `timeout` closes the
    /// connection, counted in `metrics`.
    pub fn new(inner: L, timeout: Duration, metrics: Arc<Metrics>) -> Self {
        CutSlowClients {
            inner,
            timeout,
            metrics,
        }
    }

    /// Wraps `inner` with the state's [`write_timeout`](crate::ApiConfig::write_timeout)
    /// and metrics.
    pub fn from_state(inner: L, state: &ApiState) -> Self {
        Self::new(inner, state.config().write_timeout, state.metrics().clone())
    }

    /// The wrapped listener.
    pub fn get_ref(&self) -> &L {
        &self.inner
    }
}

impl<L> Listener for CutSlowClients<L>
where
    L: Listener,
    L::Addr: std::fmt::Debug,
{
    type Io = WriteTimeout<L::Io>;
    type Addr = L::Addr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (io, addr) = self.inner.accept().await;
        let peer = format!("{addr:?}");
        (
            WriteTimeout::new(io, self.timeout, peer, self.metrics.clone()),
            addr,
        )
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// A connection whose writes fail once they stayed pending for longer
/// than a timeout (the client read nothing meanwhile).
#[derive(Debug)]
pub struct WriteTimeout<S> {
    inner: S,
    timeout: Duration,
    /// Set while a write is pending: when the connection gives up.
    stalled: Option<Pin<Box<Sleep>>>,
    /// Since when it is pending (for the log).
    stalled_since: Option<Instant>,
    /// The client, for the log.
    peer: String,
    metrics: Arc<Metrics>,
    /// Set once the connection was cut: every write fails from then on.
    cut: bool,
}

impl<S> WriteTimeout<S> {
    /// Wraps `inner`; `peer` names the client in the log.
    pub fn new(inner: S, timeout: Duration, peer: String, metrics: Arc<Metrics>) -> Self {
        WriteTimeout {
            inner,
            timeout,
            stalled: None,
            stalled_since: None,
            peer,
            metrics,
            cut: false,
        }
    }

    /// The wrapped connection.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    fn timed_out() -> io::Error {
        io::Error::new(
            io::ErrorKind::TimedOut,
            "the client read nothing within the write timeout",
        )
    }

    /// Called with the outcome of a write operation: a pending one starts
    /// (or checks) the clock, any other stops it.
    fn watch<T>(&mut self, cx: &mut Context<'_>, poll: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        match poll {
            Poll::Ready(result) => {
                self.stalled = None;
                self.stalled_since = None;
                Poll::Ready(result)
            }
            Poll::Pending => {
                if self.timeout.is_zero() {
                    return Poll::Pending;
                }
                let timeout = self.timeout;
                let sleep = self.stalled.get_or_insert_with(|| {
                    self.stalled_since = Some(Instant::now());
                    Box::pin(tokio::time::sleep(timeout))
                });
                if sleep.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                self.cut = true;
                self.stalled = None;
                let waited = self
                    .stalled_since
                    .take()
                    .map_or(timeout, |since| since.elapsed());
                self.metrics.slow_client_cut("write_timeout");
                tracing::warn!(
                    peer = %self.peer,
                    waited_ms = waited.as_millis() as u64,
                    timeout_ms = timeout.as_millis() as u64,
                    "connection cut: the client read nothing for longer than the write timeout \
                     while the server had data for it (a slow or stuck reader)"
                );
                Poll::Ready(Err(Self::timed_out()))
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for WriteTimeout<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WriteTimeout<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.cut {
            return Poll::Ready(Err(Self::timed_out()));
        }
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.watch(cx, poll)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.cut {
            return Poll::Ready(Err(Self::timed_out()));
        }
        let poll = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.watch(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        // Keeps hyper's queued writes (no copy into one large buffer per
        // connection).
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.cut {
            return Poll::Ready(Err(Self::timed_out()));
        }
        let poll = Pin::new(&mut self.inner).poll_flush(cx);
        self.watch(cx, poll)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.cut {
            // Nothing more to say to this client.
            return Poll::Ready(Ok(()));
        }
        let poll = Pin::new(&mut self.inner).poll_shutdown(cx);
        let result = ready!(self.watch(cx, poll));
        Poll::Ready(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test(start_paused = true)]
    async fn a_stuck_reader_is_cut_and_counted() {
        let metrics = Arc::new(Metrics::new());
        // An in-memory pipe of 64 bytes: the reader never reads.
        let (server, _client) = tokio::io::duplex(64);
        let mut io = WriteTimeout::new(
            server,
            Duration::from_secs(5),
            "test".into(),
            metrics.clone(),
        );
        let started = Instant::now();
        let chunk = [b'x'; 16];
        let error = loop {
            if let Err(error) = io.write_all(&chunk).await {
                break error;
            }
        };
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= Duration::from_secs(5));
        assert_eq!(metrics.slow_clients_cut("write_timeout"), 1);
        // Every later write fails at once.
        assert!(io.write_all(b"more").await.is_err());
        assert_eq!(metrics.slow_clients_cut("write_timeout"), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_reader_that_keeps_up_is_never_cut() {
        let metrics = Arc::new(Metrics::new());
        let (server, mut client) = tokio::io::duplex(64);
        let mut io = WriteTimeout::new(
            server,
            Duration::from_secs(5),
            "test".into(),
            metrics.clone(),
        );
        // The reader takes 3 s per 64 bytes: slower than nothing, but it
        // reads, so every write completes within the timeout.
        let reader = tokio::spawn(async move {
            let mut total = 0;
            let mut buf = [0u8; 64];
            loop {
                tokio::time::sleep(Duration::from_secs(3)).await;
                match client.read(&mut buf).await {
                    Ok(0) | Err(_) => return total,
                    Ok(n) => total += n,
                }
            }
        });
        for _ in 0..32 {
            io.write_all(&[b'y'; 16]).await.unwrap();
        }
        // Long idle periods between writes are fine too.
        tokio::time::sleep(Duration::from_secs(60)).await;
        io.write_all(b"\n").await.unwrap();
        io.shutdown().await.unwrap();
        drop(io);
        assert_eq!(reader.await.unwrap(), 32 * 16 + 1);
        assert_eq!(metrics.slow_clients_cut("write_timeout"), 0);
    }
}
