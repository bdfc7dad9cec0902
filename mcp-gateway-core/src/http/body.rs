//! Response bodies: a full JSON body, or an SSE stream fed by a channel with keep-alive comments.

use std::{
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Full, combinators::BoxBody as HttpBoxBody};
use tokio::{sync::mpsc, time::Interval};

use crate::message::BoxError;

/// The response body of the adapter.
pub type BoxBody = HttpBoxBody<Bytes, BoxError>;

/// A complete body.
pub(crate) fn full(bytes: impl Into<Bytes>) -> BoxBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// An empty body.
pub(crate) fn empty() -> BoxBody {
    full(Bytes::new())
}

/// One SSE event carrying a JSON-RPC message.
pub(crate) fn sse_event(id: Option<&str>, json: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(json.len() + 48);
    if let Some(id) = id {
        out.extend_from_slice(b"id: ");
        out.extend_from_slice(id.as_bytes());
        out.push(b'\n');
    }
    out.extend_from_slice(b"event: message\ndata: ");
    // Compact JSON has no raw newlines; guard anyway so a frame can never be split.
    for &b in json {
        if b == b'\n' {
            out.extend_from_slice(b"\ndata: ");
        } else if b != b'\r' {
            out.push(b);
        }
    }
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

/// A priming event (SEP-1699): an event id with empty data, plus the reconnection delay, so a
/// client can resume the stream with `Last-Event-ID` before any message has been sent on it.
pub(crate) fn priming_event(id: &str, retry: std::time::Duration) -> Bytes {
    Bytes::from(format!(
        "id: {id}\nretry: {}\ndata: \n\n",
        retry.as_millis()
    ))
}

const KEEP_ALIVE: &[u8] = b": keep-alive\n\n";

/// An SSE body: yields what arrives on the channel, ends when every sender is gone, and sends a
/// comment when nothing was sent for `keep_alive`.
pub(crate) struct SseBody {
    rx: mpsc::UnboundedReceiver<Bytes>,
    keep_alive: Option<Interval>,
}

impl SseBody {
    pub(crate) fn new(rx: mpsc::UnboundedReceiver<Bytes>, keep_alive: Option<Duration>) -> Self {
        let keep_alive = keep_alive.filter(|d| !d.is_zero()).map(|period| {
            let mut interval =
                tokio::time::interval_at(tokio::time::Instant::now() + period, period);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            interval
        });
        Self { rx, keep_alive }
    }

    pub(crate) fn boxed(self) -> BoxBody {
        BoxBody::new(self)
    }
}

impl Body for SseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        match this.rx.poll_recv(cx) {
            Poll::Ready(Some(bytes)) => {
                if let Some(k) = this.keep_alive.as_mut() {
                    k.reset();
                }
                return Poll::Ready(Some(Ok(Frame::data(bytes))));
            }
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Pending => {}
        }
        if let Some(k) = this.keep_alive.as_mut()
            && k.poll_tick(cx).is_ready()
        {
            return Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(KEEP_ALIVE)))));
        }
        Poll::Pending
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_format() {
        let e = sse_event(Some("3-1"), br#"{"a":1}"#);
        assert_eq!(&e[..], b"id: 3-1\nevent: message\ndata: {\"a\":1}\n\n");
        let e = sse_event(None, b"x\ny");
        assert_eq!(&e[..], b"event: message\ndata: x\ndata: y\n\n");
    }
}
