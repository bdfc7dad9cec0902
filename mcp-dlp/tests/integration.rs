//! All integration tests of `mcp-dlp` in one test binary: one link instead of 8,
//! which keeps the debug build small (each binary links rmcp, reqwest and rustls).
//! Run one file's tests with `cargo test -p <crate> --test integration <module>::`.

mod bad_input;
mod cli;
mod config;
mod corpus;
mod layer;
mod prefilter;
mod properties;
mod webhook;
