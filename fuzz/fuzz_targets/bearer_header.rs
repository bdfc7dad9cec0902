//! Run with `RUSTC_BOOTSTRAP=1 cargo fuzz run bearer_header fuzz/corpus/bearer_header fuzz/seeds/bearer_header` (from the
//! repository root). The body and its invariants: `mcp_identity::fuzz::bearer_header`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mcp_identity::fuzz::bearer_header(data));
