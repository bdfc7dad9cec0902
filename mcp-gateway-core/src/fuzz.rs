//! The bodies of the cargo-fuzz targets in `fuzz/` for the parsers of this crate that an attacker
//! reaches (feature `fuzzing`): JSON-RPC framing of a POST body, sealed session ids,
//! `Last-Event-ID`, and the SSE parsing of an upstream's answers (rmcp's `sse-stream`). Each feeds
//! arbitrary bytes and checks what the parser promises, so a fuzzer finds wrong answers as well as
//! panics. The unit tests run the same bodies on stable Rust over seeds and random input.

use serde_json::{Value, json};

use crate::{
    http::{fuzz_parse_message, parse_event_id},
    session::{SessionClaims, SessionKey},
};

/// A JSON-RPC message as the Streamable HTTP adapter reads a POST body: whatever it accepts has a
/// string or integer id (or none), and writing it back out parses to the same message.
pub fn jsonrpc_message(data: &[u8]) {
    let Some(parsed) = fuzz_parse_message(data) else {
        return;
    };
    if let Some(id) = &parsed.id {
        assert!(
            id.is_string() || id.is_i64() || id.is_u64(),
            "accepted id {id}"
        );
    }
    let mut again = json!({"jsonrpc": "2.0"});
    if let Some(id) = &parsed.id {
        again["id"] = id.clone();
    }
    match &parsed.kind {
        FuzzMessage::Request { method, params } => {
            again["method"] = Value::String(method.clone());
            again["params"] = Value::Object(params.clone());
        }
        FuzzMessage::Response { result } => match result {
            Ok(v) => again["result"] = v.clone(),
            Err(e) => again["error"] = serde_json::to_value(e).expect("errors encode"),
        },
    }
    let bytes = serde_json::to_vec(&again).expect("encodes");
    let reparsed = fuzz_parse_message(&bytes).expect("a written message parses again");
    assert_eq!(reparsed, parsed);
}

/// What [`jsonrpc_message`] compares.
#[derive(Debug, PartialEq)]
pub struct FuzzParsed {
    /// The id, if any.
    pub id: Option<Value>,
    /// Request/notification or response.
    pub kind: FuzzMessage,
}

/// The two shapes of an accepted message.
#[derive(Debug, PartialEq)]
pub enum FuzzMessage {
    /// A request (with an id) or a notification.
    Request {
        /// Its method.
        method: String,
        /// Its params (an object).
        params: serde_json::Map<String, Value>,
    },
    /// A response to a server-to-client request.
    Response {
        /// The result or error.
        result: Result<Value, crate::ErrorData>,
    },
}

fn key() -> &'static SessionKey {
    static KEY: std::sync::OnceLock<SessionKey> = std::sync::OnceLock::new();
    KEY.get_or_init(|| SessionKey::from_bytes([7; 32]))
}

/// A session id as it arrives in `Mcp-Session-Id`: arbitrary text never opens (ids are sealed
/// with AES-256-GCM), and a real id opens only while unaltered.
pub fn session_id(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        assert!(
            key().open(text).is_err(),
            "a forged session id opened: {text:?}"
        );
    }
    let claims = SessionClaims::new([1; 32], "2025-11-25");
    let sealed = key().seal(&claims).expect("seals");
    assert!(key().open(&sealed).is_ok());
    if let (Some(&first), false) = (data.first(), sealed.is_empty()) {
        // Flip one character of a real id, chosen by the input.
        let mut bytes = sealed.into_bytes();
        let at = usize::from(first) % bytes.len();
        bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(bytes).expect("ascii");
        assert!(key().open(&tampered).is_err(), "a tampered id opened");
    }
}

/// `Last-Event-ID`: what parses is `<stream>-<seq>` and prints back to an equal value.
pub fn last_event_id(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Some((stream, seq)) = parse_event_id(text) else {
        return;
    };
    assert_eq!(
        parse_event_id(&format!("{stream}-{seq}")),
        Some((stream, seq))
    );
}

/// An upstream's SSE answer, split into chunks where the input says, parsed by `sse-stream` (what
/// rmcp's client uses): no panic, both parses fail or neither does, and when neither fails the
/// same bytes give the same events however they are chunked.
///
/// Found by this target: `sse-stream` 0.2 treats a line with an unknown field name (`o: x`) as an
/// error, where the SSE specification says to ignore it, and reports that error *before* the events
/// that came earlier in the same network chunk, so a client that stops at the first error (rmcp
/// does) loses them. See `unknown_sse_fields_end_the_stream` below. With an error, the comparison
/// therefore stops at "both fail".
pub fn sse(data: &[u8]) {
    let Some((&split, body)) = data.split_first() else {
        return;
    };
    let at = usize::from(split).min(body.len());
    let chunked = events(vec![body[..at].to_vec(), body[at..].to_vec()]);
    let whole = events(vec![body.to_vec()]);
    let failed = |e: &[String]| e.iter().any(|e| e.starts_with("error"));
    assert_eq!(failed(&chunked), failed(&whole), "{chunked:?} vs {whole:?}");
    if !failed(&whole) {
        assert_eq!(chunked, whole, "chunk boundaries changed the events");
    }
}

fn events(chunks: Vec<Vec<u8>>) -> Vec<String> {
    use futures::StreamExt;
    let stream = futures::stream::iter(
        chunks
            .into_iter()
            .map(|c| Ok::<_, std::io::Error>(bytes::Bytes::from(c))),
    );
    let sse = sse_stream::SseStream::from_bytes_stream(stream);
    futures::executor::block_on(async move {
        sse.map(|item| match item {
            Ok(e) => format!(
                "id={:?} event={:?} data={:?} retry={:?}",
                e.id, e.event, e.data, e.retry
            ),
            Err(e) => format!("error: {e}"),
        })
        .collect()
        .await
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn seeds() -> Vec<Vec<u8>> {
        [
            &br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a__b"}}"#[..],
            br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
            br#"{"jsonrpc":"2.0","id":"x","result":{"ok":true}}"#,
            br#"{"jsonrpc":"2.0","id":2,"error":{"code":-1,"message":"no"}}"#,
            br#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#,
            b"12-34",
            b"id: 3-1\nretry: 500\ndata: \n\ndata: {\"a\":1}\n\n",
            b"\xEF\xBB\xBFdata: a\r\ndata: b\r\n\r\n: comment\n",
            b"",
        ]
        .iter()
        .map(|s| s.to_vec())
        .collect()
    }

    /// The fuzzer's finding, pinned: an unknown field is an error, reported before an event that
    /// preceded it in the same chunk. If `sse-stream` ever follows the specification here, this
    /// test fails and the note on [`sse`] can go.
    #[test]
    fn unknown_sse_fields_end_the_stream() {
        let whole = events(vec![b"id:\n\no:a: \n\n".to_vec()]);
        assert_eq!(whole.len(), 2, "{whole:?}");
        assert!(whole[0].starts_with("error"), "{whole:?}");
        assert!(whole[1].starts_with("id="), "{whole:?}");
        let chunked = events(vec![b"id:\n\n".to_vec(), b"o:a: \n\n".to_vec()]);
        assert_eq!(chunked.len(), 2, "{chunked:?}");
        assert!(chunked[1].starts_with("error"), "{chunked:?}");
        sse(b"\x05id:\n\no:a: \n\n");
    }

    #[test]
    fn every_body_passes_the_seeds() {
        for s in seeds() {
            jsonrpc_message(&s);
            session_id(&s);
            last_event_id(&s);
            sse(&s);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        #[test]
        fn every_body_survives_random_bytes(data in proptest::collection::vec(any::<u8>(), 0..512)) {
            jsonrpc_message(&data);
            session_id(&data);
            last_event_id(&data);
            sse(&data);
        }

        #[test]
        fn sse_survives_event_shaped_text(lines in proptest::collection::vec("(id|data|event|retry|:)?: ?[ -~]{0,20}", 0..12), sep in "(\n|\r\n|\r)") {
            let mut text = vec![0u8];
            text.extend(lines.join(&sep).into_bytes());
            sse(&text);
        }
    }
}
