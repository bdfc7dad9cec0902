//! All integration tests of `mcp-policy` in one test binary: one link instead of 4,
//! which keeps the debug build small (each binary links rmcp, reqwest and rustls).
//! Run one file's tests with `cargo test -p <crate> --test integration <module>::`.

mod bad_input;
mod common;
mod corpus;
mod layer;
mod props;
