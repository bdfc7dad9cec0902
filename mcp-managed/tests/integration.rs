//! All integration tests of `mcp-managed` in one test binary: one link instead of 2,
//! which keeps the debug build small (each binary links rmcp, reqwest and rustls).
//! Run one file's tests with `cargo test -p <crate> --test integration <module>::`.

mod common;
mod containers;
mod local;
