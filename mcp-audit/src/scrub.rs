//! Secret scrubbing for recorded arguments and for tracing output.
//!
//! The lead connects this to the DLP redactor (`mcp-dlp`), which this crate does not depend on:
//! any `Fn(&mut Value) + Send + Sync` is a [`Scrubber`].

use std::{io, sync::Arc};

use serde_json::Value;

/// Removes secrets from a JSON value in place.
pub trait Scrubber: Send + Sync + 'static {
    /// Rewrites `value` so that no secret remains.
    fn scrub(&self, value: &mut Value);

    /// Scrubs a piece of free text (log lines, error messages). The default wraps the text in a
    /// JSON string and calls [`Scrubber::scrub`].
    fn scrub_text(&self, text: &str) -> String {
        let mut v = Value::String(text.to_owned());
        self.scrub(&mut v);
        match v {
            Value::String(s) => s,
            other => other.to_string(),
        }
    }
}

impl<F> Scrubber for F
where
    F: Fn(&mut Value) + Send + Sync + 'static,
{
    fn scrub(&self, value: &mut Value) {
        self(value)
    }
}

/// A scrubber that leaves everything as is.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoScrub;

impl Scrubber for NoScrub {
    fn scrub(&self, _: &mut Value) {}
}

/// A shared scrubber handle.
pub type SharedScrubber = Arc<dyn Scrubber>;

// === impl ScrubbingMakeWriter ===

/// A [`tracing_subscriber::fmt::MakeWriter`] that passes every formatted line through a scrubber
/// before it reaches the real writer, so tracing output carries no secrets either.
///
/// ```
/// use mcp_audit::scrub::ScrubbingMakeWriter;
/// let scrub = |v: &mut serde_json::Value| {
///     if let serde_json::Value::String(s) = v { *s = s.replace("hunter2", "[REDACTED]") }
/// };
/// let subscriber = tracing_subscriber::fmt()
///     .with_writer(ScrubbingMakeWriter::new(std::io::stderr, std::sync::Arc::new(scrub)))
///     .finish();
/// # drop(subscriber);
/// ```
#[derive(Clone)]
pub struct ScrubbingMakeWriter<M> {
    inner: M,
    scrubber: SharedScrubber,
}

impl<M> std::fmt::Debug for ScrubbingMakeWriter<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ScrubbingMakeWriter")
    }
}

impl<M> ScrubbingMakeWriter<M> {
    /// Wraps a writer factory.
    pub fn new(inner: M, scrubber: SharedScrubber) -> Self {
        Self { inner, scrubber }
    }
}

impl<'a, M> tracing_subscriber::fmt::MakeWriter<'a> for ScrubbingMakeWriter<M>
where
    M: tracing_subscriber::fmt::MakeWriter<'a>,
{
    type Writer = ScrubbingWriter<M::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        ScrubbingWriter {
            inner: self.inner.make_writer(),
            scrubber: self.scrubber.clone(),
            buf: Vec::new(),
        }
    }
}

/// The writer [`ScrubbingMakeWriter`] hands out: buffers one event's output, scrubs it on flush
/// or drop.
pub struct ScrubbingWriter<W: io::Write> {
    inner: W,
    scrubber: SharedScrubber,
    buf: Vec<u8>,
}

impl<W: io::Write> std::fmt::Debug for ScrubbingWriter<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ScrubbingWriter")
    }
}

impl<W: io::Write> ScrubbingWriter<W> {
    fn drain(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let text = String::from_utf8_lossy(&self.buf);
        let clean = self.scrubber.scrub_text(&text);
        self.buf.clear();
        self.inner.write_all(clean.as_bytes())
    }
}

impl<W: io::Write> io::Write for ScrubbingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.drain()?;
        self.inner.flush()
    }
}

impl<W: io::Write> Drop for ScrubbingWriter<W> {
    fn drop(&mut self) {
        let _ = self.drain();
        let _ = self.inner.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);
    impl io::Write for Capture {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0
                .lock()
                .map_err(|_| io::Error::other("poisoned"))?
                .extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn tracing_output_is_scrubbed() {
        let cap = Capture::default();
        let sink = cap.clone();
        let scrub = |v: &mut Value| {
            if let Value::String(s) = v {
                *s = s.replace("sk-live-123", "[REDACTED]");
            }
        };
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(ScrubbingMakeWriter::new(
                move || sink.clone(),
                Arc::new(scrub),
            ))
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(token = "sk-live-123", "calling upstream with sk-live-123");
        });
        let out = String::from_utf8(cap.0.lock().unwrap().clone()).unwrap();
        assert!(out.contains("calling upstream"), "{out}");
        assert!(!out.contains("sk-live-123"), "{out}");
        assert_eq!(out.matches("[REDACTED]").count(), 2, "{out}");
    }
}
