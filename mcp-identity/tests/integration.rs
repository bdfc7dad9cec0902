//! All integration tests of `mcp-identity` in one test binary: one link instead of 5,
//! which keeps the debug build small (each binary links rmcp, reqwest and rustls).
//! Run one file's tests with `cargo test -p <crate> --test integration <module>::`.

mod authn_idp;
mod common;
mod credentials_e2e;
mod oauth_client;
mod python_sdk_discovery;
mod vault_rotation;
