//! Bad input: invalid UTF-8, deep nesting, multi-megabyte strings, pathological patterns.

use mcp_dlp::{Detector, DetectorsBuilder, Redactor, Scanner, Scope};
use mcp_gateway_core::Direction;
use serde_json::{Value, json};

#[test]
fn invalid_utf8_is_scanned_as_bytes() {
    let r = Redactor::new();
    let input = b"\xc3\x28 key=AKIAIOSFODNN7EXAMPLE \xa0\xa1 mail a@b.example.com \xff";
    let out = r.redact_bytes(input);
    assert_eq!(
        out.as_ref(),
        &b"\xc3\x28 key=[REDACTED:aws_access_key] \xa0\xa1 mail [REDACTED:email] \xff"[..]
    );
}

#[test]
fn deep_nesting_is_blocked_not_overflowed() {
    // deeper than serde_json's own parse limit, built directly
    let mut v = json!("AKIAIOSFODNN7EXAMPLE");
    for _ in 0..10_000 {
        v = Value::Array(vec![v]);
    }
    let report = Scanner::default().scan_value(&mut v, &Scope::direction(Direction::Request));
    let block = report.block.expect("blocked");
    assert_eq!(block.rule, "dlp:max_depth");
    // drop a deep value without overflowing the stack
    let mut cur = v;
    while let Value::Array(mut a) = cur {
        cur = a.pop().unwrap_or(Value::Null);
    }
}

#[test]
fn multi_megabyte_strings() {
    let r = Redactor::new();
    let t = std::time::Instant::now();
    // 4 MiB of clean text with a secret at the end
    let mut s = "lorem ipsum dolor sit amet ".repeat(4 << 20 >> 5);
    s.push_str("AKIAIOSFODNN7EXAMPLE");
    let out = r.redact(&s);
    assert!(out.ends_with("[REDACTED:aws_access_key]"));
    eprintln!("clean {:?}", t.elapsed());
    // 4 MiB single token: one long base64 run
    let blob: String = (0..(4 << 20))
        .map(|i| b"aZ3kQ9xP2mL7vB1n"[i % 16] as char)
        .collect();
    let mut v = json!({"text": blob});
    let report = Scanner::default().scan_value(&mut v, &Scope::direction(Direction::Response));
    assert!(
        report
            .findings
            .iter()
            .any(|f| f.kind.as_ref() == "generic_secret")
    );
    eprintln!("blob {:?}", t.elapsed());
    // 4 MiB of one letter (the email local-part and secret patterns stay alive all along)
    let a = "a".repeat(4 << 20);
    assert!(r.redact(&a).len() == a.len());
    eprintln!("letter {:?}", t.elapsed());
    // 2 MiB of digits and dashes (card / phone / SSN candidates everywhere)
    let d = "1-".repeat(1 << 17);
    let _ = r.redact(&d);
    eprintln!("digits {:?}", t.elapsed());
}

#[test]
fn pathological_patterns_stay_linear_or_are_refused() {
    // classic catastrophic-backtracking patterns compile and run in linear time (no backtracking)
    let d = DetectorsBuilder::empty()
        .detector(Detector::new("evil1", "(a+)+$"))
        .detector(Detector::new("evil2", "(a|aa)+b"))
        .detector(Detector::new("evil3", "(x+x+)+y"))
        .build()
        .expect("compiles");
    let hay = "a".repeat(1 << 20) + "!" + &"x".repeat(1 << 16);
    let _ = d.find_all(hay.as_bytes());
    // huge automata are refused with a clear error
    let err = DetectorsBuilder::empty()
        .detector(Detector::new("huge", "[a-z]{100}{100}{100}"))
        .build()
        .expect_err("too big");
    assert!(err.to_string().contains("huge"), "{err}");
    // look-around and back-references are not regex-automata syntax: clear error
    let err = DetectorsBuilder::empty()
        .detector(Detector::new("lookahead", "foo(?=bar)"))
        .build()
        .expect_err("unsupported");
    assert!(err.to_string().contains("lookahead"), "{err}");
}
