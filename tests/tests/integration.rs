//! All integration tests of `tests` in one test binary: one link instead of 6,
//! which keeps the debug build small (each binary links rmcp, reqwest and rustls).
//! Run one file's tests with `cargo test -p <crate> --test integration <module>::`.

mod conformance;
mod conformance_gateway;
mod dlp_e2e;
mod gateway_e2e;
mod layers_e2e;
mod peers;
mod sessions_and_bad_input;
