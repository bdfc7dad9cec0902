//! All integration tests of `mcp-gateway-core` in one test binary: one link instead of 3,
//! which keeps the debug build small (each binary links rmcp, reqwest and rustls).
//! Run one file's tests with `cargo test -p <crate> --test integration <module>::`.

mod http_adapter;
mod http_sessions;
mod upstreams;
