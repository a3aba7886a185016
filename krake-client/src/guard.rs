//! The [`WriteGuard`]: a last check before each write request goes out, for
//! fencing (a controller that lost its leader lease must not write).

/// Decides, just before each write request (POST, PUT, PATCH, DELETE) is
/// sent, whether it may go out (fencing for leader election).
///
/// The check runs as late as possible: immediately before the request is
/// handed to the HTTP stack, and again before every retry or failover
/// attempt. A refused write is never sent; the caller gets
/// [`Error::WriteRefused`](crate::Error::WriteRefused) with the reason.
/// Reads and watches are not guarded.
///
/// ```
/// use std::sync::Arc;
/// use std::sync::atomic::{AtomicBool, Ordering};
/// use krake_client::{Client, WriteGuard};
///
/// #[derive(Debug, Default)]
/// struct Leader(AtomicBool);
///
/// impl WriteGuard for Leader {
///     fn check(&self) -> Result<(), String> {
///         if self.0.load(Ordering::Acquire) {
///             Ok(())
///         } else {
///             Err("not the leader".to_owned())
///         }
///     }
/// }
///
/// let leader = Arc::new(Leader::default());
/// let client = Client::new("http://localhost:8080")?.with_write_guard(leader.clone());
/// # let _ = client;
/// # Ok::<(), krake_client::Error>(())
/// ```
pub trait WriteGuard: Send + Sync + std::fmt::Debug {
    /// `Ok(())` lets the write go out; `Err(reason)` refuses it.
    fn check(&self) -> Result<(), String>;
}
