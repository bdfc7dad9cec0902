//! Admin endpoints for the reference gateway to mount (behind its own admin authentication):
//!
//! | method | path | does |
//! |---|---|---|
//! | GET | `/instances` | list instances |
//! | POST | `/instances/<server>/<instance>/recreate` | replace with a fresh generation |
//! | POST | `/instances/<server>/<instance>/drain` | maintenance mode, then teardown |
//! | DELETE | `/instances/<server>/<instance>` | teardown now |

use std::time::Duration;

use http::{Method, StatusCode};
use serde_json::{Value, json};

use crate::manager::Manager;

/// Handles one admin request; `path` is relative to where the admin API is mounted.
pub async fn handle(manager: &Manager, method: &Method, path: &str) -> (StatusCode, Value) {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (method, parts.as_slice()) {
        (&Method::GET, ["instances"]) => (StatusCode::OK, json!({"instances": manager.list()})),
        (&Method::POST, ["instances", server, instance, "recreate"]) => {
            match manager.recreate(server, instance).await {
                Ok(ep) => (
                    StatusCode::OK,
                    json!({"server": server, "instance": instance, "generation": ep.generation}),
                ),
                Err(e) => (StatusCode::CONFLICT, json!({"error": e.to_string()})),
            }
        }
        (&Method::POST, ["instances", server, instance, "drain"]) => {
            if manager.drain(
                server,
                instance,
                Duration::from_secs(30),
                Duration::from_secs(600),
            ) {
                (
                    StatusCode::ACCEPTED,
                    json!({"draining": format!("{server}/{instance}")}),
                )
            } else {
                (StatusCode::NOT_FOUND, json!({"error": "no such instance"}))
            }
        }
        (&Method::DELETE, ["instances", server, instance]) => {
            if manager.teardown(server, instance).await {
                (
                    StatusCode::OK,
                    json!({"removed": format!("{server}/{instance}")}),
                )
            } else {
                (StatusCode::NOT_FOUND, json!({"error": "no such instance"}))
            }
        }
        _ => (
            StatusCode::NOT_FOUND,
            json!({"error": "unknown admin route"}),
        ),
    }
}
