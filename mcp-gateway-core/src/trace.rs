//! W3C trace context: one trace id joins every leg of a call, each leg gets a span id.

use std::fmt;

/// A W3C trace context (`traceparent`).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceContext {
    /// The 16-byte trace id shared by every leg.
    pub trace_id: [u8; 16],
    /// The 8-byte id of the current span.
    pub span_id: [u8; 8],
    /// The span this one descends from, if any.
    pub parent_span_id: Option<[u8; 8]>,
    /// W3C trace flags (bit 0: sampled).
    pub flags: u8,
}

impl TraceContext {
    /// A new trace with random ids.
    pub fn new_root() -> Self {
        let mut trace_id = [0u8; 16];
        let mut span_id = [0u8; 8];
        fill_random(&mut trace_id);
        fill_random(&mut span_id);
        Self {
            trace_id,
            span_id,
            parent_span_id: None,
            flags: 1,
        }
    }

    /// A child span in the same trace.
    pub fn child(&self) -> Self {
        let mut span_id = [0u8; 8];
        fill_random(&mut span_id);
        Self {
            trace_id: self.trace_id,
            span_id,
            parent_span_id: Some(self.span_id),
            flags: self.flags,
        }
    }

    /// Parses a `traceparent` header (`00-<32 hex>-<16 hex>-<2 hex>`); the result is a child of the
    /// caller's span. `None` if malformed.
    pub fn from_traceparent(header: &str) -> Option<Self> {
        let mut parts = header.trim().split('-');
        let version = parts.next()?;
        let trace = parts.next()?;
        let span = parts.next()?;
        let flags = parts.next()?;
        if version.len() != 2
            || version == "ff"
            || trace.len() != 32
            || span.len() != 16
            || flags.len() != 2
        {
            return None;
        }
        let mut trace_id = [0u8; 16];
        let mut parent = [0u8; 8];
        decode_hex(trace, &mut trace_id)?;
        decode_hex(span, &mut parent)?;
        let mut f = [0u8; 1];
        decode_hex(flags, &mut f)?;
        if trace_id == [0; 16] || parent == [0; 8] {
            return None;
        }
        let mut span_id = [0u8; 8];
        fill_random(&mut span_id);
        Some(Self {
            trace_id,
            span_id,
            parent_span_id: Some(parent),
            flags: f[0],
        })
    }

    /// The `traceparent` header value for this span.
    pub fn traceparent(&self) -> String {
        format!(
            "00-{}-{}-{:02x}",
            self.trace_id_hex(),
            hex(&self.span_id),
            self.flags
        )
    }

    /// The trace id as 32 lower-case hex digits.
    pub fn trace_id_hex(&self) -> String {
        hex(&self.trace_id)
    }

    /// The span id as 16 lower-case hex digits.
    pub fn span_id_hex(&self) -> String {
        hex(&self.span_id)
    }
}

impl fmt::Debug for TraceContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.traceparent())
    }
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

fn decode_hex(s: &str, out: &mut [u8]) -> Option<()> {
    let bytes = s.as_bytes();
    if bytes.len() != out.len() * 2 {
        return None;
    }
    for (i, o) in out.iter_mut().enumerate() {
        let hi = (bytes[2 * i] as char).to_digit(16)?;
        let lo = (bytes[2 * i + 1] as char).to_digit(16)?;
        *o = (hi * 16 + lo) as u8;
    }
    Some(())
}

/// Fills a buffer from a fast thread-local generator seeded by the OS (ids, not secrets).
fn fill_random(buf: &mut [u8]) {
    use std::cell::Cell;
    thread_local! {
        static STATE: Cell<u64> = Cell::new({
            let mut seed = [0u8; 8];
            let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut seed);
            u64::from_le_bytes(seed) | 1
        });
    }
    STATE.with(|state| {
        for chunk in buf.chunks_mut(8) {
            // xorshift64*
            let mut x = state.get();
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            state.set(x);
            let v = x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_round_trip() {
        let root = TraceContext::new_root();
        let parsed = TraceContext::from_traceparent(&root.traceparent()).unwrap();
        assert_eq!(parsed.trace_id, root.trace_id);
        assert_eq!(parsed.parent_span_id, Some(root.span_id));
        assert_ne!(parsed.span_id, root.span_id);
    }

    #[test]
    fn traceparent_rejects_garbage() {
        for bad in [
            "",
            "00-zz-11-01",
            "00-00000000000000000000000000000000-0000000000000001-01",
            "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        ] {
            assert!(TraceContext::from_traceparent(bad).is_none(), "{bad}");
        }
        assert!(
            TraceContext::from_traceparent(
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
            )
            .is_some()
        );
    }
}
