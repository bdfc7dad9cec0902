//! Run with `RUSTC_BOOTSTRAP=1 cargo fuzz run www_authenticate fuzz/corpus/www_authenticate fuzz/seeds/www_authenticate` (from the
//! repository root). The body and its invariants: `mcp_identity::fuzz::www_authenticate`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mcp_identity::fuzz::www_authenticate(data));
