//! The prefilter only decides where the automaton runs: findings with it are exactly those of an
//! unanchored scan without it, on the labeled corpus and on generated text made of the anchors'
//! look-alikes (digit clusters, colons, `@`, token runs, `eyJ`, `-----BEGIN`), with built-in and
//! custom detectors, over whole texts and sub-spans.

use mcp_dlp::detector::{Detector, Detectors, DetectorsBuilder, Match};
use proptest::prelude::*;

fn pair(custom: bool) -> (Detectors, Detectors) {
    let build = |prefilter: bool| {
        let mut b = DetectorsBuilder::new().prefilter(prefilter);
        if custom {
            b = b
                .detector(Detector::new("employee_id", r"EMP-[0-9]{6}"))
                .detector(Detector::new("ticket", r"tk[a-z]{2,}[0-9]{2,}").case_insensitive())
                .detector(Detector::new("any_word_at", r"[a-z]{3}@@"));
        }
        b.build().unwrap()
    };
    (build(true), build(false))
}

fn scan(d: &Detectors, hay: &[u8], span: std::ops::Range<usize>) -> Vec<Match> {
    let mut out = Vec::new();
    d.scan(hay, span, |m| out.push(m));
    out
}

#[test]
fn corpus_findings_are_the_same_with_and_without_the_prefilter() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let (fast, slow) = pair(false);
    let mut texts = 0;
    let mut found = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "jsonl") {
            continue;
        }
        for line in std::fs::read_to_string(&path).unwrap().lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let text = v["text"].as_str().unwrap().as_bytes();
            let a = fast.find_all(text);
            assert_eq!(a, slow.find_all(text), "{}: {line}", path.display());
            texts += 1;
            found += a.len();
        }
    }
    assert!(
        texts > 500 && found > 300,
        "{texts} texts, {found} findings"
    );
}

/// Pieces that put anchors, near-misses and real values next to each other.
fn piece() -> impl Strategy<Value = Vec<u8>> {
    let lit = |s: &'static str| Just(s.as_bytes().to_vec());
    prop_oneof![
        "[a-z]{1,9}".prop_map(String::into_bytes),
        "[ .,:;()\\-+/_@\n]{1,3}".prop_map(String::into_bytes),
        "[0-9]{1,5}".prop_map(String::into_bytes),
        "[0-9 .()\\-]{1,12}".prop_map(String::into_bytes),
        "[0-9a-fA-F:]{1,10}".prop_map(String::into_bytes),
        "[A-Za-z0-9+/_\\-]{15,45}".prop_map(String::into_bytes),
        "[A-Za-z0-9._%+\\-]{1,70}".prop_map(String::into_bytes),
        "[A-Z]{2}[0-9]{2}[ A-Z0-9]{8,30}".prop_map(String::into_bytes),
        prop::collection::vec(any::<u8>(), 1..6),
        lit("john.doe@example.com"),
        lit("a@b"),
        lit("+1 (415) 555-2671"),
        lit("(212) 555-0123"),
        lit("020 7946 0958"),
        lit("123-45-6789"),
        lit("4111 1111 1111 1111"),
        lit("4111111111111111"),
        lit("DE89 3704 0044 0532 0130 00"),
        lit("GB82WEST12345698765432"),
        lit("192.168.10.1"),
        lit("2001:db8::8a2e:370:7334"),
        lit("fe80::1"),
        lit("AKIAIOSFODNN7EXAMPLE"),
        lit("aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
        lit("ghp_1A2b3C4d5E6f7G8h9I0jKlMnOpQrStUvWxYz"),
        lit("glpat-abcdefghij0123456789"),
        lit("xoxb-123456789012-abcdefABCDEF"),
        lit("https://hooks.slack.com/services/T01234567/B01234567/abcdefghijklmnopqrstuvwx"),
        lit("sk_live_0123456789abcdefghijklmn"),
        lit("AIzaSyA1234567890abcdefghijklmnopqrstu"),
        lit(
            "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"
        ),
        lit("eyJ"),
        lit("-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA7bq\n-----END RSA PRIVATE KEY-----"),
        lit("-----BEGIN"),
        lit("EMP-123456"),
        lit("TKabc123"),
        lit("abc@@"),
    ]
}

fn text() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(piece(), 0..24).prop_map(|p| p.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn same_findings_as_the_unfiltered_scan(hay in text(), custom in any::<bool>(), cut in any::<(u16, u16)>()) {
        let (fast, slow) = pair(custom);
        prop_assert_eq!(fast.find_all(&hay), slow.find_all(&hay));
        // a sub-span: bytes outside it are context only
        let (a, b) = (usize::from(cut.0) % (hay.len() + 1), usize::from(cut.1) % (hay.len() + 1));
        let span = a.min(b)..a.max(b);
        prop_assert_eq!(scan(&fast, &hay, span.clone()), scan(&slow, &hay, span));
    }
}
