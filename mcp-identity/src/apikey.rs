//! API keys for agents and machines: a per-agent identity scoped to one gateway.
//!
//! A key looks like `mgw_<id>_<secret>`: the 16-hex-digit id finds the record, the secret (256
//! random bits, base64url) is checked against its stored SHA-256 in constant time. Only the hash
//! is stored. The store is a JSON file, rewritten atomically; a running gateway notices changes
//! made by the CLI (create, revoke) within `reload_interval`.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, RwLock},
    time::{Duration, Instant, SystemTime},
};

use base64::Engine as _;
use mcp_gateway_core::identity::{AuthMethod, Identity, PrincipalKind};
use ring::rand::SecureRandom;
use serde::{Deserialize, Serialize};

/// The prefix of every key.
pub const PREFIX: &str = "mgw_";

/// Errors of the key store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiKeyError {
    /// Reading or writing the store failed.
    #[error("API key store {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The store file is not valid.
    #[error("API key store {path}: {message}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// No key with that id.
    #[error("no API key with id `{0}`")]
    NotFound(String),
    /// Bad input.
    #[error("{0}")]
    Invalid(String),
}

/// What is stored about a key (never the key itself).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyRecord {
    /// The public id (part of the key).
    pub id: String,
    /// The agent's subject: the identity the key authenticates as.
    pub agent: String,
    /// A human description.
    #[serde(default)]
    pub description: String,
    /// Teams the agent belongs to.
    #[serde(default)]
    pub teams: Vec<String>,
    /// Roles.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Scopes granted.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Hex SHA-256 of the secret part.
    pub secret_sha256: String,
    /// Creation time, Unix seconds.
    pub created_at: u64,
    /// Expiry, Unix seconds.
    #[serde(default)]
    pub expires_at: Option<u64>,
    /// Revocation time, Unix seconds.
    #[serde(default)]
    pub revoked_at: Option<u64>,
}

/// What a new key should say.
#[derive(Debug, Clone, Default)]
pub struct NewApiKey {
    /// The agent's subject.
    pub agent: String,
    /// A description.
    pub description: String,
    /// Teams.
    pub teams: Vec<String>,
    /// Roles.
    pub roles: Vec<String>,
    /// Scopes.
    pub scopes: Vec<String>,
    /// Lifetime.
    pub ttl: Option<Duration>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct StoreFile {
    keys: BTreeMap<String, ApiKeyRecord>,
}

struct Loaded {
    keys: Arc<BTreeMap<String, ApiKeyRecord>>,
    modified: Option<SystemTime>,
    checked: Instant,
}

/// The API key store, file-backed.
pub struct ApiKeyStore {
    path: PathBuf,
    issuer: String,
    reload_interval: Duration,
    loaded: RwLock<Loaded>,
    write: Mutex<()>,
}

impl std::fmt::Debug for ApiKeyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKeyStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

fn unix_now() -> u64 {
    crate::jwt::now_secs()
}

fn sha256_hex(data: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let d = ring::digest::digest(&ring::digest::SHA256, data);
    let mut s = String::with_capacity(64);
    for b in d.as_ref() {
        s.push(char::from(HEX[usize::from(b >> 4)]));
        s.push(char::from(HEX[usize::from(b & 0xf)]));
    }
    s
}

fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Splits a presented key into id and secret. Pure; a fuzz target.
pub fn parse_api_key(key: &str) -> Option<(&str, &str)> {
    let rest = key.strip_prefix(PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    let id_ok = id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit());
    let secret_ok = (20..=128).contains(&secret.len())
        && secret
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    (id_ok && secret_ok).then_some((id, secret))
}

impl ApiKeyStore {
    /// Opens (or starts) the store at `path`. `issuer` names this gateway in the identities the
    /// keys produce (keys are scoped to one gateway).
    pub fn open(path: impl Into<PathBuf>, issuer: impl Into<String>) -> Result<Self, ApiKeyError> {
        let path = path.into();
        let (keys, modified) = read_file(&path)?;
        Ok(Self {
            path,
            issuer: issuer.into(),
            reload_interval: Duration::from_secs(2),
            loaded: RwLock::new(Loaded {
                keys: Arc::new(keys),
                modified,
                checked: Instant::now(),
            }),
            write: Mutex::new(()),
        })
    }

    /// How often the file is checked for changes made by another process (default 2 s).
    #[must_use]
    pub fn reload_interval(mut self, d: Duration) -> Self {
        self.reload_interval = d;
        self
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn snapshot(&self) -> Arc<BTreeMap<String, ApiKeyRecord>> {
        let stale = self
            .loaded
            .read()
            .map(|l| l.checked.elapsed() >= self.reload_interval)
            .unwrap_or(true);
        if stale {
            self.maybe_reload();
        }
        self.loaded
            .read()
            .map(|l| Arc::clone(&l.keys))
            .unwrap_or_default()
    }

    fn maybe_reload(&self) {
        let modified = std::fs::metadata(&self.path)
            .and_then(|m| m.modified())
            .ok();
        let Ok(mut l) = self.loaded.write() else {
            return;
        };
        l.checked = Instant::now();
        if modified != l.modified {
            match read_file(&self.path) {
                Ok((keys, m)) => {
                    l.keys = Arc::new(keys);
                    l.modified = m;
                }
                Err(e) => {
                    tracing::error!(error = %e, "reloading API keys failed; keeping the last good set")
                }
            }
        }
    }

    /// Checks a presented key; the identity it authenticates as, or `None`.
    pub fn authenticate(&self, key: &str) -> Option<Identity> {
        let (id, secret) = parse_api_key(key)?;
        let keys = self.snapshot();
        let rec = keys.get(id)?;
        let presented = sha256_hex(secret.as_bytes());
        if !ct_eq(presented.as_bytes(), rec.secret_sha256.as_bytes()) {
            return None;
        }
        let now = unix_now();
        if rec.revoked_at.is_some() || rec.expires_at.is_some_and(|e| e <= now) {
            return None;
        }
        let mut identity = Identity::new(rec.agent.as_str(), AuthMethod::ApiKey);
        identity.kind = PrincipalKind::Agent;
        identity.teams = rec.teams.clone();
        identity.roles = rec.roles.clone();
        identity.scopes = rec.scopes.clone();
        identity.token_id = Some(rec.id.clone());
        identity.issuer = Some(self.issuer.clone());
        identity.name = (!rec.description.is_empty()).then(|| rec.description.clone());
        Some(identity)
    }

    /// Creates a key; returns the full key (shown once) and its record.
    pub fn create(&self, new: NewApiKey) -> Result<(String, ApiKeyRecord), ApiKeyError> {
        if new.agent.trim().is_empty() {
            return Err(ApiKeyError::Invalid(
                "the agent name must not be empty".into(),
            ));
        }
        let rng = ring::rand::SystemRandom::new();
        let mut id = [0u8; 8];
        let mut secret = [0u8; 32];
        rng.fill(&mut id)
            .and_then(|_| rng.fill(&mut secret))
            .map_err(|_| ApiKeyError::Invalid("no system randomness".into()))?;
        let id: String = id.iter().map(|b| format!("{b:02x}")).collect();
        let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret);
        let now = unix_now();
        let rec = ApiKeyRecord {
            id: id.clone(),
            agent: new.agent,
            description: new.description,
            teams: new.teams,
            roles: new.roles,
            scopes: new.scopes,
            secret_sha256: sha256_hex(secret.as_bytes()),
            created_at: now,
            expires_at: new.ttl.map(|t| now.saturating_add(t.as_secs())),
            revoked_at: None,
        };
        self.modify(|keys| {
            keys.insert(id.clone(), rec.clone());
            Ok(())
        })?;
        Ok((format!("{PREFIX}{id}_{secret}"), rec))
    }

    /// Revokes a key by id (it stays listed, marked revoked).
    pub fn revoke(&self, id: &str) -> Result<ApiKeyRecord, ApiKeyError> {
        let mut out = None;
        self.modify(|keys| {
            let rec = keys
                .get_mut(id)
                .ok_or_else(|| ApiKeyError::NotFound(id.into()))?;
            rec.revoked_at.get_or_insert_with(unix_now);
            out = Some(rec.clone());
            Ok(())
        })?;
        out.ok_or_else(|| ApiKeyError::NotFound(id.into()))
    }

    /// All records.
    pub fn list(&self) -> Result<Vec<ApiKeyRecord>, ApiKeyError> {
        let (keys, _) = read_file(&self.path)?;
        Ok(keys.into_values().collect())
    }

    fn modify(
        &self,
        f: impl FnOnce(&mut BTreeMap<String, ApiKeyRecord>) -> Result<(), ApiKeyError>,
    ) -> Result<(), ApiKeyError> {
        let _guard = self
            .write
            .lock()
            .map_err(|_| ApiKeyError::Invalid("store lock poisoned".into()))?;
        let (mut keys, _) = read_file(&self.path)?;
        f(&mut keys)?;
        let file = StoreFile { keys };
        let json =
            serde_json::to_vec_pretty(&file).map_err(|e| ApiKeyError::Invalid(e.to_string()))?;
        write_atomic(&self.path, &json).map_err(|source| ApiKeyError::Io {
            path: self.path.clone(),
            source,
        })?;
        let modified = std::fs::metadata(&self.path)
            .and_then(|m| m.modified())
            .ok();
        if let Ok(mut l) = self.loaded.write() {
            l.keys = Arc::new(file.keys);
            l.modified = modified;
            l.checked = Instant::now();
        }
        Ok(())
    }
}

fn read_file(
    path: &Path,
) -> Result<(BTreeMap<String, ApiKeyRecord>, Option<SystemTime>), ApiKeyError> {
    match std::fs::read(path) {
        Ok(bytes) => {
            let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
            let file: StoreFile =
                serde_json::from_slice(&bytes).map_err(|e| ApiKeyError::Corrupt {
                    path: path.into(),
                    message: e.to_string(),
                })?;
            Ok((file.keys, modified))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok((BTreeMap::new(), None)),
        Err(source) => Err(ApiKeyError::Io {
            path: path.into(),
            source,
        }),
    }
}

/// Writes a file atomically (temp file + rename) with owner-only permissions.
pub(crate) fn write_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(0o600);
    }
    let mut f = opts.open(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let p = std::env::temp_dir().join(format!("mcp-identity-{}-{name}", std::process::id()));
        let _ = std::fs::remove_file(&p);
        p
    }

    #[test]
    fn create_authenticate_revoke() {
        let path = tmp("keys.json");
        let store = ApiKeyStore::open(&path, "gw-1").unwrap();
        let (key, rec) = store
            .create(NewApiKey {
                agent: "ci-bot".into(),
                teams: vec!["platform".into()],
                scopes: vec!["mcp".into()],
                ..Default::default()
            })
            .unwrap();
        let raw = std::fs::read_to_string(&path).unwrap();
        assert!(
            !raw.contains(key.rsplit('_').next().unwrap()),
            "secret stored in clear"
        );
        let id = store.authenticate(&key).unwrap();
        assert_eq!(&*id.subject, "ci-bot");
        assert_eq!(id.kind, PrincipalKind::Agent);
        assert_eq!(id.auth_method, AuthMethod::ApiKey);
        assert_eq!(id.teams, ["platform"]);
        assert_eq!(id.token_id.as_deref(), Some(rec.id.as_str()));
        // A wrong secret with the right id fails.
        let mut bad = key.clone();
        bad.pop();
        bad.push(if key.ends_with('A') { 'B' } else { 'A' });
        assert!(store.authenticate(&bad).is_none());
        // Another process (a second store on the same file) revokes; this one notices.
        let other = ApiKeyStore::open(&path, "gw-1").unwrap();
        other.revoke(&rec.id).unwrap();
        let store = store.reload_interval(Duration::ZERO);
        assert!(store.authenticate(&key).is_none());
        assert!(store.list().unwrap()[0].revoked_at.is_some());
        assert!(matches!(
            store.revoke("0000000000000000"),
            Err(ApiKeyError::NotFound(_))
        ));
    }

    #[test]
    fn key_shape() {
        assert!(parse_api_key("mgw_0123456789abcdef_aaaaaaaaaaaaaaaaaaaaaaaa").is_some());
        assert!(parse_api_key("mgw_0123456789abcdeg_aaaaaaaaaaaaaaaaaaaaaaaa").is_none());
        assert!(parse_api_key("mgw_0123456789abcdef_short").is_none());
        assert!(parse_api_key("xyz_0123456789abcdef_aaaaaaaaaaaaaaaaaaaaaaaa").is_none());
        assert!(parse_api_key("mgw_").is_none());
    }
}
