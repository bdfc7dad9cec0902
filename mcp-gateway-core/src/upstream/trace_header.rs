//! W3C trace context on the wire to Streamable HTTP upstreams: every request the gateway POSTs
//! carries its `_meta.traceparent` (SEP-414) also as the HTTP `traceparent` header (and
//! `tracestate` likewise), so HTTP-level tracing in front of an upstream (a proxy, a load balancer,
//! the server's own HTTP instrumentation) joins the same trace.
//!
//! One rmcp transport carries the calls of every downstream session, so the header cannot be a
//! transport-wide setting: [`TraceHeaders`] wraps the HTTP client and derives it per message.
//! [`Upstream::request`](super::Upstream::request) puts `ctx.trace` into `_meta.traceparent` when
//! the request carries none (the audit layer sets it to the gateway-to-upstream span).

use std::{collections::HashMap, sync::Arc};

use futures::stream::BoxStream;
use http::{HeaderName, HeaderValue};
use rmcp::{
    model::{ClientJsonRpcMessage, GetMeta},
    transport::streamable_http_client::{
        SseError, StreamableHttpClient, StreamableHttpError, StreamableHttpPostResponse,
    },
};
use sse_stream::Sse;

/// A [`StreamableHttpClient`] that mirrors a request's `_meta.traceparent` / `_meta.tracestate`
/// into the HTTP headers of the POST carrying it.
///
/// It also notes the session id rmcp posts with, for the direct path ([`super::direct`]).
#[derive(Clone, Debug)]
pub(crate) struct TraceHeaders<C> {
    inner: C,
    session: Arc<super::direct::SessionSlot>,
}

impl<C> TraceHeaders<C> {
    pub(crate) fn new(inner: C, session: Arc<super::direct::SessionSlot>) -> Self {
        Self { inner, session }
    }

    /// What every POST does first: note the session id, add the message's trace headers.
    fn outgoing(
        &self,
        message: &ClientJsonRpcMessage,
        session_id: Option<&Arc<str>>,
        headers: &mut HashMap<HeaderName, HeaderValue>,
    ) {
        if let Some(id) = session_id {
            self.session.set(id);
        }
        headers.extend(trace_headers(message));
    }
}

/// The trace headers a message should travel with: from a request's `_meta` only (notifications
/// and answers carry no context of their own). Malformed values are left out.
pub(crate) fn trace_headers(message: &ClientJsonRpcMessage) -> Vec<(HeaderName, HeaderValue)> {
    let ClientJsonRpcMessage::Request(request) = message else {
        return Vec::new();
    };
    let meta = request.request.get_meta();
    meta_headers(meta.get_traceparent(), meta.get_tracestate())
}

/// The `traceparent` / `tracestate` headers of a request's `_meta` values: none unless the
/// `traceparent` is valid; malformed values are left out.
pub(crate) fn meta_headers(
    traceparent: Option<&str>,
    tracestate: Option<&str>,
) -> Vec<(HeaderName, HeaderValue)> {
    let mut out = Vec::new();
    if let Some(tp) = traceparent
        && crate::TraceContext::from_traceparent(tp).is_some()
        && let Ok(v) = HeaderValue::from_str(tp)
    {
        out.push((HeaderName::from_static("traceparent"), v));
        if let Some(ts) = tracestate
            && let Ok(v) = HeaderValue::from_str(ts)
        {
            out.push((HeaderName::from_static("tracestate"), v));
        }
    }
    out
}

impl<C: StreamableHttpClient + Sync> StreamableHttpClient for TraceHeaders<C> {
    type Error = C::Error;

    async fn post_message(
        &self,
        uri: Arc<str>,
        message: ClientJsonRpcMessage,
        session_id: Option<Arc<str>>,
        auth_header: Option<String>,
        mut custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> Result<StreamableHttpPostResponse, StreamableHttpError<Self::Error>> {
        self.outgoing(&message, session_id.as_ref(), &mut custom_headers);
        self.inner
            .post_message(uri, message, session_id, auth_header, custom_headers)
            .await
    }

    async fn post_message_with_max_sse_event_size(
        &self,
        uri: Arc<str>,
        message: ClientJsonRpcMessage,
        session_id: Option<Arc<str>>,
        auth_header: Option<String>,
        mut custom_headers: HashMap<HeaderName, HeaderValue>,
        max_sse_event_size: usize,
    ) -> Result<StreamableHttpPostResponse, StreamableHttpError<Self::Error>> {
        self.outgoing(&message, session_id.as_ref(), &mut custom_headers);
        self.inner
            .post_message_with_max_sse_event_size(
                uri,
                message,
                session_id,
                auth_header,
                custom_headers,
                max_sse_event_size,
            )
            .await
    }

    async fn delete_session(
        &self,
        uri: Arc<str>,
        session_id: Arc<str>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> Result<(), StreamableHttpError<Self::Error>> {
        self.inner
            .delete_session(uri, session_id, auth_header, custom_headers)
            .await
    }

    async fn get_stream(
        &self,
        uri: Arc<str>,
        session_id: Option<Arc<str>>,
        last_event_id: Option<String>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> Result<BoxStream<'static, Result<Sse, SseError>>, StreamableHttpError<Self::Error>> {
        self.inner
            .get_stream(uri, session_id, last_event_id, auth_header, custom_headers)
            .await
    }

    async fn get_stream_with_max_sse_event_size(
        &self,
        uri: Arc<str>,
        session_id: Option<Arc<str>>,
        last_event_id: Option<String>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
        max_sse_event_size: usize,
    ) -> Result<BoxStream<'static, Result<Sse, SseError>>, StreamableHttpError<Self::Error>> {
        self.inner
            .get_stream_with_max_sse_event_size(
                uri,
                session_id,
                last_event_id,
                auth_header,
                custom_headers,
                max_sse_event_size,
            )
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(value: serde_json::Value) -> ClientJsonRpcMessage {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn request_meta_becomes_headers() {
        let tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let m = message(serde_json::json!({
            "jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"name": "x", "arguments": {}, "_meta": {"traceparent": tp, "tracestate": "k=v"}}
        }));
        let h = trace_headers(&m);
        assert_eq!(h.len(), 2, "{h:?}");
        assert_eq!(h[0].0, "traceparent");
        assert_eq!(h[0].1, tp);
        assert_eq!(h[1].0, "tracestate");
        assert_eq!(h[1].1, "k=v");
    }

    #[test]
    fn no_or_bad_context_means_no_header() {
        let none = message(serde_json::json!({
            "jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}
        }));
        assert!(trace_headers(&none).is_empty());
        let bad = message(serde_json::json!({
            "jsonrpc": "2.0", "id": 1, "method": "tools/list",
            "params": {"_meta": {"traceparent": "00-zz-\r\n-01"}}
        }));
        assert!(trace_headers(&bad).is_empty());
        let notification = message(serde_json::json!({
            "jsonrpc": "2.0", "method": "notifications/initialized"
        }));
        assert!(trace_headers(&notification).is_empty());
    }
}
