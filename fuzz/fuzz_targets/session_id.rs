//! Run with `RUSTC_BOOTSTRAP=1 cargo fuzz run session_id fuzz/corpus/session_id fuzz/seeds/session_id` (from the
//! repository root). The body and its invariants: `mcp_gateway_core::fuzz::session_id`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mcp_gateway_core::fuzz::session_id(data));
