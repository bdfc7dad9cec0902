//! All integration tests of `tests` in one test binary: one link instead of 6,
//! which keeps the debug build small (each binary links rmcp, reqwest and rustls).
//! Run one file's tests with `cargo test -p <crate> --test integration <module>::`.

mod attacks;
mod audit_e2e;
mod conformance;
mod conformance_auth;
mod conformance_gateway;
mod dlp_e2e;
mod faults;
mod gateway_e2e;
mod layers_e2e;
mod managed_e2e;
mod multi_replica;
mod peers;
mod policy_e2e;
mod sessions_and_bad_input;
