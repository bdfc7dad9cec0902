//! Tool integrity: a pin is the SHA-256 of a tool's name, title, description, schemas and
//! annotations; approvals (which features are approved, at which pin) live behind a store trait.

use std::{
    collections::BTreeMap,
    fmt, fs,
    io::Write,
    path::{Path, PathBuf},
    sync::Mutex,
};

use mcp_gateway_core::FeatureKind;
use ring::digest;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The fields of a tool definition that its pin covers.
pub const PINNED_FIELDS: [&str; 6] = [
    "name",
    "title",
    "description",
    "inputSchema",
    "outputSchema",
    "annotations",
];

/// The pin of a tool definition: lower-case hex SHA-256 of the canonical JSON (sorted keys, no
/// whitespace) of its [`PINNED_FIELDS`]. Other fields (`_meta`, `icons`) are not covered.
pub fn tool_pin(tool: &Value) -> String {
    let mut buf = Vec::with_capacity(512);
    buf.push(b'{');
    let mut first = true;
    // PINNED_FIELDS sorted by name, so the object is canonical.
    let mut fields = PINNED_FIELDS;
    fields.sort_unstable();
    for f in fields {
        if let Some(v) = tool.get(f) {
            if !first {
                buf.push(b',');
            }
            first = false;
            canonical(&Value::String(f.into()), &mut buf);
            buf.push(b':');
            canonical(v, &mut buf);
        }
    }
    buf.push(b'}');
    hex(digest::digest(&digest::SHA256, &buf).as_ref())
}

fn hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(HEX[(b >> 4) as usize] as char);
        s.push(HEX[(b & 15) as usize] as char);
    }
    s
}

/// Canonical JSON: object keys sorted, no whitespace.
pub fn canonical(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort_unstable();
            out.push(b'{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                canonical(&Value::String(k.clone()), out);
                out.push(b':');
                if let Some(x) = m.get(k) {
                    canonical(x, out);
                }
            }
            out.push(b'}');
        }
        Value::Array(a) => {
            out.push(b'[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                canonical(x, out);
            }
            out.push(b']');
        }
        other => {
            // Scalars serialize deterministically.
            let _ = serde_json::to_writer(&mut *out, other);
        }
    }
}

// === approvals ===

/// One approved feature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Approval {
    /// The upstream server.
    pub server: String,
    /// `tool`, `prompt`, `resource` or `resource_template`.
    pub kind: String,
    /// The feature's name (or URI) on the upstream.
    pub name: String,
    /// The approved pin (tools only); `None` approves whatever definition is seen first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pin: Option<String>,
    /// Who approved it (`admin`, `tofu` for a first-seen pin under allow-all, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    /// When, in milliseconds since the Unix epoch.
    #[serde(default)]
    pub at_ms: u64,
}

/// Key of an approval: (kind, server, name).
pub type ApprovalKey = (FeatureKind, String, String);

/// Parses a feature kind name.
pub fn parse_kind(s: &str) -> Option<FeatureKind> {
    Some(match s {
        "tool" | "tools" => FeatureKind::Tool,
        "prompt" | "prompts" => FeatureKind::Prompt,
        "resource" | "resources" => FeatureKind::Resource,
        "resource_template" | "resource_templates" => FeatureKind::ResourceTemplate,
        _ => return None,
    })
}

/// The approvals file: a JSON document `{"approvals": [..]}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Approvals {
    /// The approved features.
    #[serde(default)]
    pub approvals: Vec<Approval>,
}

impl Approvals {
    /// Indexed by key (later entries win).
    pub fn index(&self) -> BTreeMap<ApprovalKey, Approval> {
        self.approvals
            .iter()
            .filter_map(|a| {
                Some((
                    (parse_kind(&a.kind)?, a.server.clone(), a.name.clone()),
                    a.clone(),
                ))
            })
            .collect()
    }

    /// From an index.
    pub fn from_index(index: &BTreeMap<ApprovalKey, Approval>) -> Self {
        Self {
            approvals: index.values().cloned().collect(),
        }
    }
}

/// Errors of an approval store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Reading or writing failed.
    #[error("approvals store {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a valid approvals document.
    #[error("approvals store {path}: line {line}, column {column}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What is wrong.
        message: String,
    },
}

/// Where approvals are kept. Implement it for a database; [`FileStore`] is the default.
pub trait ApprovalStore: Send + Sync + fmt::Debug + 'static {
    /// Loads all approvals.
    fn load(&self) -> Result<Approvals, StoreError>;
    /// Replaces all approvals.
    fn save(&self, approvals: &Approvals) -> Result<(), StoreError>;
}

/// Approvals in a JSON file, written atomically (temporary file + rename). A missing file is an
/// empty store.
#[derive(Debug, Clone)]
pub struct FileStore {
    path: PathBuf,
}

impl FileStore {
    /// A store at `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl ApprovalStore for FileStore {
    fn load(&self) -> Result<Approvals, StoreError> {
        let text = match fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Approvals::default()),
            Err(source) => {
                return Err(StoreError::Io {
                    path: self.path.clone(),
                    source,
                });
            }
        };
        serde_json::from_str(&text).map_err(|e| StoreError::Parse {
            path: self.path.clone(),
            line: e.line(),
            column: e.column(),
            message: e.to_string(),
        })
    }

    fn save(&self, approvals: &Approvals) -> Result<(), StoreError> {
        let io = |source| StoreError::Io {
            path: self.path.clone(),
            source,
        };
        let mut tmp = self.path.clone().into_os_string();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let body =
            serde_json::to_vec_pretty(approvals).map_err(|e| io(std::io::Error::other(e)))?;
        let mut f = fs::File::create(&tmp).map_err(io)?;
        f.write_all(&body).map_err(io)?;
        f.sync_all().map_err(io)?;
        fs::rename(&tmp, &self.path).map_err(io)
    }
}

/// Approvals in memory (tests, or a gateway that re-approves on start).
#[derive(Debug, Default)]
pub struct MemoryStore(Mutex<Approvals>);

impl MemoryStore {
    /// A store holding `approvals`.
    pub fn new(approvals: Approvals) -> Self {
        Self(Mutex::new(approvals))
    }
}

impl ApprovalStore for MemoryStore {
    fn load(&self) -> Result<Approvals, StoreError> {
        Ok(self.0.lock().map(|a| a.clone()).unwrap_or_default())
    }

    fn save(&self, approvals: &Approvals) -> Result<(), StoreError> {
        if let Ok(mut a) = self.0.lock() {
            *a = approvals.clone();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pin_ignores_key_order_and_unpinned_fields() {
        let a = json!({"name": "t", "description": "d", "inputSchema": {"type": "object", "properties": {"a": {}, "b": {}}}});
        let b = json!({"inputSchema": {"properties": {"b": {}, "a": {}}, "type": "object"}, "description": "d", "name": "t", "_meta": {"x": 1}});
        assert_eq!(tool_pin(&a), tool_pin(&b));
        let c = json!({"name": "t", "description": "d!", "inputSchema": {"type": "object", "properties": {"a": {}, "b": {}}}});
        assert_ne!(tool_pin(&a), tool_pin(&c));
        assert_eq!(tool_pin(&a).len(), 64);
    }

    #[test]
    fn file_store_round_trips_and_reports_lines() {
        let dir = std::env::temp_dir().join(format!("mcp-policy-store-{}", std::process::id()));
        let _ = fs::create_dir_all(&dir);
        let store = FileStore::new(dir.join("approvals.json"));
        assert_eq!(store.load().unwrap_or_default(), Approvals::default());
        let a = Approvals {
            approvals: vec![Approval {
                server: "s".into(),
                kind: "tool".into(),
                name: "t".into(),
                pin: Some("ab".into()),
                by: Some("admin".into()),
                at_ms: 1,
            }],
        };
        assert!(store.save(&a).is_ok());
        assert_eq!(store.load().ok(), Some(a));
        let _ = fs::write(
            store.path(),
            "{\n \"approvals\": [\n  {\"server\": 1}\n ]\n}",
        );
        match store.load() {
            Err(StoreError::Parse { line, .. }) => assert_eq!(line, 3),
            other => panic!("expected a parse error, got {other:?}"),
        }
    }
}
