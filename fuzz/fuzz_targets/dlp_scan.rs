//! Run with `RUSTC_BOOTSTRAP=1 cargo fuzz run dlp_scan fuzz/corpus/dlp_scan fuzz/seeds/dlp_scan`
//! (from the repository root). Untrusted text (tool arguments and results) through the built-in
//! detectors: no panic, matches are in bounds, ordered and non-overlapping, and `is_match`
//! agrees with `find_all`.
#![no_main]

use std::sync::OnceLock;

use mcp_dlp::detector::Detectors;

fn detectors() -> &'static Detectors {
    static D: OnceLock<Detectors> = OnceLock::new();
    D.get_or_init(Detectors::builtin)
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let d = detectors();
    let found = d.find_all(data);
    assert_eq!(d.is_match(data), !found.is_empty());
    let mut last_end = 0;
    for m in &found {
        assert!(m.start < m.end && m.end <= data.len(), "{m:?}");
        assert!(m.start >= last_end, "overlap at {m:?}");
        last_end = m.end;
    }
});
