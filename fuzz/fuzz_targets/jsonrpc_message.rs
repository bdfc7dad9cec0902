//! Run with `RUSTC_BOOTSTRAP=1 cargo fuzz run jsonrpc_message fuzz/corpus/jsonrpc_message fuzz/seeds/jsonrpc_message` (from the
//! repository root). The body and its invariants: `mcp_gateway_core::fuzz::jsonrpc_message`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mcp_gateway_core::fuzz::jsonrpc_message(data));
