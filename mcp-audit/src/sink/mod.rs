//! Where audit events go: the [`AuditSink`] trait and the built-in sinks.
//!
//! Sinks run on their own worker thread behind a bounded queue (see [`crate::Auditor`]); they may
//! block (file I/O, an HTTP export) without ever blocking the request path beyond that queue.

use std::sync::Arc;

use crate::AuditEvent;

pub mod file;
#[cfg(feature = "otlp")]
pub mod otlp;

pub use file::{FileSinkConfig, Fsync, JsonlFileSink};

/// A sink failed to take (part of) a batch.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct SinkError {
    /// How many leading events of the batch were committed before the failure.
    pub written: usize,
    message: String,
    #[source]
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl SinkError {
    /// A failure after `written` events of the batch were committed.
    pub fn new(
        written: usize,
        message: impl Into<String>,
        source: impl Into<Option<Box<dyn std::error::Error + Send + Sync>>>,
    ) -> Self {
        Self {
            written,
            message: message.into(),
            source: source.into(),
        }
    }
}

/// A destination for audit events.
///
/// Called from the sink's own worker thread, never from the request path; blocking is fine.
/// Closures `Fn(&[Arc<AuditEvent>]) -> Result<(), SinkError>` are sinks too.
pub trait AuditSink: Send + Sync + 'static {
    /// Writes a batch, in order. On failure, report how many leading events were committed: the
    /// worker retries the rest.
    fn write(&self, events: &[Arc<AuditEvent>]) -> Result<(), SinkError>;

    /// Called periodically while idle (fsync intervals, flushing exporters).
    fn tick(&self) -> Result<(), SinkError> {
        Ok(())
    }

    /// Makes everything written so far durable (called on shutdown and by [`crate::Auditor::flush`]).
    fn flush(&self) -> Result<(), SinkError> {
        Ok(())
    }
}

impl<F> AuditSink for F
where
    F: Fn(&[Arc<AuditEvent>]) -> Result<(), SinkError> + Send + Sync + 'static,
{
    fn write(&self, events: &[Arc<AuditEvent>]) -> Result<(), SinkError> {
        self(events)
    }
}
