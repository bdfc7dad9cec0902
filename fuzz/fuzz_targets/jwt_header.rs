//! Run with `RUSTC_BOOTSTRAP=1 cargo fuzz run jwt_header fuzz/corpus/jwt_header fuzz/seeds/jwt_header` (from the
//! repository root). The body and its invariants: `mcp_identity::fuzz::jwt_header`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mcp_identity::fuzz::jwt_header(data));
