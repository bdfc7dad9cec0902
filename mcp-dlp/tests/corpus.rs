//! Precision and recall of every built-in detector on the labeled corpus in `tests/corpus/`.
//!
//! Each line of `tests/corpus/*.jsonl` is `{"text": "...", "labels": [{"kind", "value"}]}`;
//! positives carry labels, look-alike negatives none. A finding counts as a true positive when
//! its kind and matched text equal a label of the record.

use std::collections::BTreeMap;

use mcp_dlp::Detectors;

#[derive(Default, Debug)]
struct Counts {
    tp: u32,
    fp: u32,
    fn_: u32,
}

#[test]
fn precision_and_recall_per_detector() {
    let detectors = Detectors::builtin();
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/corpus");
    let mut counts: BTreeMap<String, Counts> = BTreeMap::new();
    for d in detectors.detectors() {
        counts.insert(d.kind().to_string(), Counts::default());
    }
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .expect("corpus dir")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    files.sort();
    assert!(files.len() >= 10, "corpus files missing");
    let mut mistakes = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).expect("read corpus");
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let rec: serde_json::Value = serde_json::from_str(line).expect("corpus line is JSON");
            let t = rec["text"].as_str().expect("text");
            let mut expected: Vec<(String, String)> = rec["labels"]
                .as_array()
                .expect("labels")
                .iter()
                .map(|l| {
                    (
                        l["kind"].as_str().expect("kind").to_string(),
                        l["value"].as_str().expect("value").to_string(),
                    )
                })
                .collect();
            for m in detectors.find_all(t.as_bytes()) {
                let kind = detectors.kind(m.detector).to_string();
                let value = t[m.start..m.end].to_string();
                let c = counts.entry(kind.clone()).or_default();
                if let Some(i) = expected.iter().position(|e| e.0 == kind && e.1 == value) {
                    expected.remove(i);
                    c.tp += 1;
                } else {
                    c.fp += 1;
                    mistakes.push(format!("FP {kind}: {value:?} in {t:?}"));
                }
            }
            for (kind, value) in expected {
                counts.entry(kind.clone()).or_default().fn_ += 1;
                mistakes.push(format!("FN {kind}: {value:?} in {t:?}"));
            }
        }
    }
    println!(
        "{:<16} {:>5} {:>4} {:>4} {:>9} {:>7}",
        "detector", "tp", "fp", "fn", "precision", "recall"
    );
    let mut failed = Vec::new();
    for (kind, c) in &counts {
        let precision = if c.tp + c.fp == 0 {
            1.0
        } else {
            f64::from(c.tp) / f64::from(c.tp + c.fp)
        };
        let recall = if c.tp + c.fn_ == 0 {
            1.0
        } else {
            f64::from(c.tp) / f64::from(c.tp + c.fn_)
        };
        println!(
            "{kind:<16} {:>5} {:>4} {:>4} {precision:>9.3} {recall:>7.3}",
            c.tp, c.fp, c.fn_
        );
        if c.tp == 0 {
            failed.push(format!("{kind}: no positives in the corpus"));
        }
        if precision < 0.95 || recall < 0.95 {
            failed.push(format!(
                "{kind}: precision {precision:.3} recall {recall:.3}"
            ));
        }
    }
    for m in &mistakes {
        println!("{m}");
    }
    assert!(failed.is_empty(), "below 0.95: {failed:?}");
}
