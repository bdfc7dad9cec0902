//! Run with `RUSTC_BOOTSTRAP=1 cargo fuzz run last_event_id fuzz/corpus/last_event_id fuzz/seeds/last_event_id` (from the
//! repository root). The body and its invariants: `mcp_gateway_core::fuzz::last_event_id`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mcp_gateway_core::fuzz::last_event_id(data));
