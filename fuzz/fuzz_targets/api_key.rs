//! Run with `RUSTC_BOOTSTRAP=1 cargo fuzz run api_key fuzz/corpus/api_key fuzz/seeds/api_key` (from the
//! repository root). The body and its invariants: `mcp_identity::fuzz::api_key`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mcp_identity::fuzz::api_key(data));
