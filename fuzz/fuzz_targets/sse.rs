//! Run with `RUSTC_BOOTSTRAP=1 cargo fuzz run sse fuzz/corpus/sse fuzz/seeds/sse` (from the
//! repository root). The body and its invariants: `mcp_gateway_core::fuzz::sse`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mcp_gateway_core::fuzz::sse(data));
