//! Scanning throughput and layer latency.
//!
//! Run with `cargo bench -p mcp-dlp --bench scan`.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use mcp_dlp::detector::Detectors;

const WORDS: &[&str] = &[
    "the",
    "of",
    "and",
    "to",
    "in",
    "is",
    "that",
    "for",
    "it",
    "as",
    "was",
    "with",
    "be",
    "by",
    "on",
    "not",
    "he",
    "this",
    "are",
    "or",
    "his",
    "from",
    "at",
    "which",
    "but",
    "have",
    "an",
    "had",
    "they",
    "you",
    "were",
    "their",
    "one",
    "all",
    "we",
    "can",
    "her",
    "has",
    "there",
    "been",
    "if",
    "more",
    "when",
    "will",
    "would",
    "who",
    "so",
    "no",
    "request",
    "response",
    "server",
    "client",
    "gateway",
    "tool",
    "result",
    "content",
    "message",
    "error",
    "value",
    "function",
    "return",
    "string",
    "number",
    "config",
    "deploy",
    "cluster",
    "service",
    "user",
    "account",
    "invoice",
    "customer",
    "order",
    "shipping",
    "address",
    "weather",
    "forecast",
    "temperature",
    "London",
    "Paris",
    "Monday",
    "January",
    "project",
    "release",
    "version",
];

/// Deterministic English-like text: words, punctuation, a few small numbers, line breaks.
fn clean_text(len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 64);
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut col = 0;
    while out.len() < len {
        let r = next();
        let w = WORDS[(r % WORDS.len() as u64) as usize];
        out.extend_from_slice(w.as_bytes());
        col += w.len();
        match (r >> 32) % 40 {
            0 => out.extend_from_slice(b". "),
            1 => out.extend_from_slice(b", "),
            2 => out.extend_from_slice(format!(" {} ", (r >> 40) % 2030).as_bytes()),
            3 => out.extend_from_slice(b": "),
            _ => out.push(b' '),
        }
        if col > 90 {
            out.push(b'\n');
            col = 0;
        }
    }
    out.truncate(len);
    out
}

const HITS: &[&str] = &[
    "john.doe@example.com",
    "+1 (415) 555-2671",
    "123-45-6789",
    "4111 1111 1111 1111",
    "DE89 3704 0044 0532 0130 00",
    "192.168.10.1",
    "AKIAIOSFODNN7EXAMPLE",
    "ghp_1A2b3C4d5E6f7G8h9I0jKlMnOpQrStUvWxYz",
    "xoxb-123456789012-abcdefABCDEF",
];

/// Clean text where about 1% of the bytes are hits.
fn hit_text(len: usize) -> Vec<u8> {
    let clean = clean_text(len);
    let mut out = Vec::with_capacity(len + 1024);
    let mut i = 0;
    let mut h = 0;
    let mut hit_bytes = 0usize;
    while i < clean.len() {
        let step = 64.min(clean.len() - i);
        out.extend_from_slice(&clean[i..i + step]);
        i += step;
        if hit_bytes * 100 < out.len() {
            let hit = HITS[h % HITS.len()];
            out.push(b' ');
            out.extend_from_slice(hit.as_bytes());
            out.push(b' ');
            hit_bytes += hit.len();
            h += 1;
        }
    }
    out
}

fn throughput(c: &mut Criterion) {
    use mcp_dlp::detector::DetectorsBuilder;

    let detectors = Detectors::builtin();
    // the same automaton run over every byte (what the scan did before the prefilter)
    let unfiltered = DetectorsBuilder::new()
        .prefilter(false)
        .build()
        .expect("built-ins compile");
    // the naive baseline: each detector's pattern on its own, one pass per pattern
    let naive: Vec<Detectors> = detectors
        .detectors()
        .iter()
        .map(|d| {
            DetectorsBuilder::empty()
                .prefilter(false)
                .detector(d.clone())
                .build()
                .expect("single detector compiles")
        })
        .collect();
    let clean = clean_text(1 << 20);
    let hits = hit_text(1 << 20);
    let mut g = c.benchmark_group("scan");
    for (name, text) in [("clean", &clean), ("1pct_hits", &hits)] {
        g.throughput(Throughput::Bytes(text.len() as u64));
        g.bench_function(format!("all_builtins/{name}"), |b| {
            b.iter(|| {
                let mut n = 0;
                detectors.scan(black_box(text), 0..text.len(), |_| n += 1);
                n
            })
        });
        g.bench_function(format!("one_automaton_no_prefilter/{name}"), |b| {
            b.iter(|| {
                let mut n = 0;
                unfiltered.scan(black_box(text), 0..text.len(), |_| n += 1);
                n
            })
        });
        g.bench_function(format!("naive_each_pattern/{name}"), |b| {
            b.iter(|| {
                let mut n = 0;
                for d in &naive {
                    d.scan(black_box(text), 0..text.len(), |_| n += 1);
                }
                n
            })
        });
    }
    g.finish();

    // prompt-injection heuristics, run on every string coming back from upstreams
    let injection = mcp_dlp::injection::InjectionDetector::new();
    let mut g = c.benchmark_group("injection");
    g.throughput(Throughput::Bytes(clean.len() as u64));
    g.bench_function("clean", |b| b.iter(|| injection.scan(black_box(&clean))));
    g.finish();
}

fn layer_latency(c: &mut Criterion) {
    use mcp_dlp::DlpLayer;
    use mcp_gateway_core::{BoxError, McpRequest, Method, RequestId};
    use tower::{Layer, Service, service_fn};

    let text = String::from_utf8(clean_text(1000)).expect("ascii");
    let params = serde_json::json!({"name": "echo", "arguments": {"message": text}});
    let params = params.as_object().cloned().expect("object");
    let echo = service_fn(|req: McpRequest| async move {
        let args = req.arguments().cloned().unwrap_or_default();
        Ok::<_, BoxError>(
            req.reply(serde_json::json!({"content": [{"type": "text", "text": args["message"]}]})),
        )
    });
    let mut bare = echo;
    let mut dlp = DlpLayer::new().layer(echo);
    let mut g = c.benchmark_group("layer_1KiB_tools_call");
    g.bench_function("bare", |b| {
        b.iter(|| {
            let req = McpRequest::new(
                Some(RequestId::Number(1)),
                Method::ToolsCall,
                params.clone(),
            );
            futures::executor::block_on(bare.call(req)).expect("ok")
        })
    });
    g.bench_function("with_dlp", |b| {
        b.iter(|| {
            let req = McpRequest::new(
                Some(RequestId::Number(1)),
                Method::ToolsCall,
                params.clone(),
            );
            futures::executor::block_on(dlp.call(req)).expect("ok")
        })
    });
    g.finish();
}

#[allow(missing_docs)]
mod harness {
    use super::*;
    criterion_group!(benches, throughput, layer_latency);
}
use harness::benches;
criterion_main!(benches);
