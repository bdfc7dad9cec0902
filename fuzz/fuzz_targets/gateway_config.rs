//! Run with `RUSTC_BOOTSTRAP=1 cargo fuzz run -O gateway_config fuzz/corpus/gateway_config fuzz/seeds/gateway_config`
//! (from the repository root). The gateway's own TOML configuration, validated without reading
//! the files it names. The body and its invariants: `mcp_gateway::fuzz::gateway_config`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mcp_gateway::fuzz::gateway_config(data));
