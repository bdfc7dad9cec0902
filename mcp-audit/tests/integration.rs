//! All integration tests of `mcp-audit` in one test binary: one link instead of 6,
//! which keeps the debug build small (each binary links rmcp, reqwest and rustls).
//! Run one file's tests with `cargo test -p <crate> --test integration <module>::`.

mod chain;
mod common;
mod crash;
mod layer;
mod observe;
mod otlp;
mod queue;
