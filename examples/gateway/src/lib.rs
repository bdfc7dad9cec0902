//! The library part of the reference gateway `mcp-gateway`: its TOML configuration
//! ([`config`]: parsing, validation with line numbers, the built-in default). The binary
//! (`src/main.rs`) assembles the layers from the [`config::Settings`] this returns.
//!
//! | feature | default | what |
//! |---|---|---|
//! | `fuzzing` | no | `fuzz`: the body of the cargo-fuzz target `gateway_config` in `fuzz/` |

pub mod config;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzz;
