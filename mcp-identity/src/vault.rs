//! The credential vault: secrets encrypted at rest with AES-256-GCM (ring), a fresh random nonce
//! per record, the key id stored with each record, key rotation without downtime (old keys keep
//! decrypting; [`Vault::reencrypt_all`] moves records to the active key in the background, with a
//! compare-and-swap so it never overwrites a concurrent write) and a file-backed store behind the
//! [`SecretStore`] trait.
//!
//! Each record's name is the AEAD's associated data: a ciphertext moved to another name does not
//! decrypt.

use std::{
    collections::HashMap,
    fmt,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, RwLock},
};

use base64::Engine as _;
use ring::{
    aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey},
    rand::{SecureRandom, SystemRandom},
};
use serde::{Deserialize, Serialize};

/// Vault errors. Messages never contain secret material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VaultError {
    /// The store failed.
    #[error("vault store: {0}")]
    Store(String),
    /// A record names a key the key ring does not have.
    #[error("record `{name}` is sealed with unknown key `{key_id}`")]
    UnknownKey {
        /// The record.
        name: String,
        /// The key id.
        key_id: String,
    },
    /// Decryption failed (tampered record, wrong key, record moved).
    #[error("record `{0}` failed authentication")]
    Tampered(String),
    /// A key is not 32 bytes of base64, or an id is bad.
    #[error("invalid vault key: {0}")]
    BadKey(String),
    /// No randomness.
    #[error("system randomness unavailable")]
    Rng,
}

/// A sealed record as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedRecord {
    /// The id of the key that sealed it.
    pub key_id: String,
    /// The 96-bit nonce, base64.
    pub nonce: String,
    /// Ciphertext and tag, base64.
    pub ciphertext: String,
}

/// Where sealed records live. Implement it for a database or a KMS-backed store.
pub trait SecretStore: Send + Sync + 'static {
    /// Reads a record.
    fn get(&self, name: &str) -> Result<Option<SealedRecord>, VaultError>;
    /// Writes a record.
    fn put(&self, name: &str, record: &SealedRecord) -> Result<(), VaultError>;
    /// Replaces a record only if it still equals `expected` (used by re-encryption).
    /// Returns whether it was replaced.
    fn compare_and_swap(
        &self,
        name: &str,
        expected: &SealedRecord,
        new: &SealedRecord,
    ) -> Result<bool, VaultError>;
    /// Deletes a record; whether it existed.
    fn delete(&self, name: &str) -> Result<bool, VaultError>;
    /// All record names.
    fn list(&self) -> Result<Vec<String>, VaultError>;
}

// === MemoryStore ===

/// An in-memory store (tests, ephemeral gateways).
#[derive(Debug, Default)]
pub struct MemoryStore(Mutex<HashMap<String, SealedRecord>>);

impl SecretStore for MemoryStore {
    fn get(&self, name: &str) -> Result<Option<SealedRecord>, VaultError> {
        let m = self
            .0
            .lock()
            .map_err(|_| VaultError::Store("poisoned".into()))?;
        Ok(m.get(name).cloned())
    }
    fn put(&self, name: &str, record: &SealedRecord) -> Result<(), VaultError> {
        let mut m = self
            .0
            .lock()
            .map_err(|_| VaultError::Store("poisoned".into()))?;
        m.insert(name.to_owned(), record.clone());
        Ok(())
    }
    fn compare_and_swap(
        &self,
        name: &str,
        expected: &SealedRecord,
        new: &SealedRecord,
    ) -> Result<bool, VaultError> {
        let mut m = self
            .0
            .lock()
            .map_err(|_| VaultError::Store("poisoned".into()))?;
        match m.get_mut(name) {
            Some(cur) if cur == expected => {
                *cur = new.clone();
                Ok(true)
            }
            _ => Ok(false),
        }
    }
    fn delete(&self, name: &str) -> Result<bool, VaultError> {
        let mut m = self
            .0
            .lock()
            .map_err(|_| VaultError::Store("poisoned".into()))?;
        Ok(m.remove(name).is_some())
    }
    fn list(&self) -> Result<Vec<String>, VaultError> {
        let m = self
            .0
            .lock()
            .map_err(|_| VaultError::Store("poisoned".into()))?;
        Ok(m.keys().cloned().collect())
    }
}

// === FileStore ===

/// One JSON file per record in a directory (names hex-encoded), written atomically; the default
/// embedded store. Writes are serialized within the process.
#[derive(Debug)]
pub struct FileStore {
    dir: PathBuf,
    write: Mutex<()>,
}

impl FileStore {
    /// A store in `dir` (created if missing, mode 0700).
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, VaultError> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir)
            .map_err(|e| VaultError::Store(format!("{}: {e}", dir.display())))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700));
        }
        Ok(Self {
            dir,
            write: Mutex::new(()),
        })
    }

    fn path(&self, name: &str) -> PathBuf {
        let hex: String = name.bytes().map(|b| format!("{b:02x}")).collect();
        self.dir.join(format!("{hex}.json"))
    }

    fn read(path: &Path) -> Result<Option<SealedRecord>, VaultError> {
        match std::fs::read(path) {
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| VaultError::Store(format!("{}: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(VaultError::Store(format!("{}: {e}", path.display()))),
        }
    }

    fn write(path: &Path, record: &SealedRecord) -> Result<(), VaultError> {
        let json = serde_json::to_vec(record).map_err(|e| VaultError::Store(e.to_string()))?;
        crate::apikey::write_atomic(path, &json)
            .map_err(|e| VaultError::Store(format!("{}: {e}", path.display())))
    }
}

impl SecretStore for FileStore {
    fn get(&self, name: &str) -> Result<Option<SealedRecord>, VaultError> {
        Self::read(&self.path(name))
    }
    fn put(&self, name: &str, record: &SealedRecord) -> Result<(), VaultError> {
        let _g = self
            .write
            .lock()
            .map_err(|_| VaultError::Store("poisoned".into()))?;
        Self::write(&self.path(name), record)
    }
    fn compare_and_swap(
        &self,
        name: &str,
        expected: &SealedRecord,
        new: &SealedRecord,
    ) -> Result<bool, VaultError> {
        let _g = self
            .write
            .lock()
            .map_err(|_| VaultError::Store("poisoned".into()))?;
        let path = self.path(name);
        if Self::read(&path)?.as_ref() != Some(expected) {
            return Ok(false);
        }
        Self::write(&path, new)?;
        Ok(true)
    }
    fn delete(&self, name: &str) -> Result<bool, VaultError> {
        let _g = self
            .write
            .lock()
            .map_err(|_| VaultError::Store("poisoned".into()))?;
        match std::fs::remove_file(self.path(name)) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(VaultError::Store(e.to_string())),
        }
    }
    fn list(&self) -> Result<Vec<String>, VaultError> {
        let rd = std::fs::read_dir(&self.dir).map_err(|e| VaultError::Store(e.to_string()))?;
        let mut out = Vec::new();
        for entry in rd.flatten() {
            let file = entry.file_name();
            let Some(hex) = file.to_str().and_then(|f| f.strip_suffix(".json")) else {
                continue;
            };
            let bytes: Option<Vec<u8>> = (0..hex.len())
                .step_by(2)
                .map(|i| {
                    hex.get(i..i + 2)
                        .and_then(|h| u8::from_str_radix(h, 16).ok())
                })
                .collect();
            if let Some(name) = bytes.and_then(|b| String::from_utf8(b).ok()) {
                out.push(name);
            }
        }
        Ok(out)
    }
}

// === KeyRing ===

struct KeyRing {
    active: String,
    keys: HashMap<String, Arc<LessSafeKey>>,
}

/// Parses a base64 (standard or url-safe) 32-byte key.
pub fn parse_key(b64: &str) -> Result<[u8; 32], VaultError> {
    let s = b64.trim();
    let raw = base64::engine::general_purpose::STANDARD
        .decode(s)
        .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(s))
        .map_err(|_| VaultError::BadKey("not base64".into()))?;
    raw.try_into()
        .map_err(|_| VaultError::BadKey("an AES-256 key is 32 bytes".into()))
}

/// A fresh random key, base64 (for `mcp-gateway vault keygen`-style tooling and tests).
pub fn generate_key() -> Result<String, VaultError> {
    let mut k = [0u8; 32];
    SystemRandom::new()
        .fill(&mut k)
        .map_err(|_| VaultError::Rng)?;
    Ok(base64::engine::general_purpose::STANDARD.encode(k))
}

fn aead_key(bytes: &[u8; 32]) -> Result<LessSafeKey, VaultError> {
    UnboundKey::new(&AES_256_GCM, bytes)
        .map(LessSafeKey::new)
        .map_err(|_| VaultError::BadKey("rejected by AES-256-GCM".into()))
}

// === Vault ===

/// Encrypts and decrypts secrets in a [`SecretStore`].
#[derive(Clone)]
pub struct Vault {
    store: Arc<dyn SecretStore>,
    ring: Arc<RwLock<KeyRing>>,
    rng: SystemRandom,
}

impl fmt::Debug for Vault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Vault")
            .field("active_key", &self.active_key_id())
            .finish_non_exhaustive()
    }
}

impl Vault {
    /// An in-memory vault with a fresh random key: secrets that live as long as the process
    /// (a command-line client, a test).
    pub fn ephemeral() -> Result<Self, VaultError> {
        let mut key = [0u8; 32];
        SystemRandom::new()
            .fill(&mut key)
            .map_err(|_| VaultError::BadKey("no system randomness".into()))?;
        Self::new(Arc::new(MemoryStore::default()), "ephemeral", &key)
    }

    /// A vault whose active key is `key_id`.
    pub fn new(
        store: Arc<dyn SecretStore>,
        key_id: &str,
        key: &[u8; 32],
    ) -> Result<Self, VaultError> {
        if key_id.is_empty() {
            return Err(VaultError::BadKey("key id must not be empty".into()));
        }
        let mut keys = HashMap::new();
        keys.insert(key_id.to_owned(), Arc::new(aead_key(key)?));
        Ok(Self {
            store,
            ring: Arc::new(RwLock::new(KeyRing {
                active: key_id.to_owned(),
                keys,
            })),
            rng: SystemRandom::new(),
        })
    }

    /// Adds an old key that may still decrypt records (not used for new writes).
    pub fn add_decrypt_key(&self, key_id: &str, key: &[u8; 32]) -> Result<(), VaultError> {
        let k = Arc::new(aead_key(key)?);
        let mut r = self
            .ring
            .write()
            .map_err(|_| VaultError::Store("poisoned".into()))?;
        r.keys.entry(key_id.to_owned()).or_insert(k);
        Ok(())
    }

    /// Makes `key_id` the active key: every write from now on uses it; old keys still decrypt.
    /// Follow with [`Vault::reencrypt_all`] (or [`Vault::spawn_reencrypt`]).
    pub fn rotate(&self, key_id: &str, key: &[u8; 32]) -> Result<(), VaultError> {
        if key_id.is_empty() {
            return Err(VaultError::BadKey("key id must not be empty".into()));
        }
        let k = Arc::new(aead_key(key)?);
        let mut r = self
            .ring
            .write()
            .map_err(|_| VaultError::Store("poisoned".into()))?;
        r.keys.insert(key_id.to_owned(), k);
        r.active = key_id.to_owned();
        Ok(())
    }

    /// The active key id.
    pub fn active_key_id(&self) -> String {
        self.ring
            .read()
            .map(|r| r.active.clone())
            .unwrap_or_default()
    }

    /// Encrypts and stores a secret.
    pub fn put(&self, name: &str, secret: &[u8]) -> Result<(), VaultError> {
        let record = self.seal(name, secret)?;
        self.store.put(name, &record)
    }

    /// Reads a secret.
    pub fn get(&self, name: &str) -> Result<Option<Vec<u8>>, VaultError> {
        match self.store.get(name)? {
            Some(r) => self.open(name, &r).map(Some),
            None => Ok(None),
        }
    }

    /// Reads a secret as UTF-8.
    pub fn get_string(&self, name: &str) -> Result<Option<String>, VaultError> {
        Ok(self
            .get(name)?
            .map(|b| String::from_utf8_lossy(&b).into_owned()))
    }

    /// Deletes a secret.
    pub fn delete(&self, name: &str) -> Result<bool, VaultError> {
        self.store.delete(name)
    }

    /// The key id a record is currently sealed with.
    pub fn record_key_id(&self, name: &str) -> Result<Option<String>, VaultError> {
        Ok(self.store.get(name)?.map(|r| r.key_id))
    }

    /// Re-encrypts every record not sealed with the active key. A record written concurrently is
    /// left alone (it already uses the active key). Returns how many were re-encrypted.
    pub fn reencrypt_all(&self) -> Result<usize, VaultError> {
        let mut n = 0;
        for name in self.store.list()? {
            let Some(old) = self.store.get(&name)? else {
                continue;
            };
            if old.key_id == self.active_key_id() {
                continue;
            }
            let plain = self.open(&name, &old)?;
            let new = self.seal(&name, &plain)?;
            if self.store.compare_and_swap(&name, &old, &new)? {
                n += 1;
            }
        }
        Ok(n)
    }

    /// Runs [`Vault::reencrypt_all`] on the blocking pool.
    pub fn spawn_reencrypt(&self) -> tokio::task::JoinHandle<Result<usize, VaultError>> {
        let v = self.clone();
        tokio::task::spawn_blocking(move || v.reencrypt_all())
    }

    fn seal(&self, name: &str, secret: &[u8]) -> Result<SealedRecord, VaultError> {
        let (key_id, key) = {
            let r = self
                .ring
                .read()
                .map_err(|_| VaultError::Store("poisoned".into()))?;
            let k = r
                .keys
                .get(&r.active)
                .cloned()
                .ok_or_else(|| VaultError::UnknownKey {
                    name: name.into(),
                    key_id: r.active.clone(),
                })?;
            (r.active.clone(), k)
        };
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce).map_err(|_| VaultError::Rng)?;
        let mut buf = secret.to_vec();
        key.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(name.as_bytes()),
            &mut buf,
        )
        .map_err(|_| VaultError::Store("encryption failed".into()))?;
        let b64 = base64::engine::general_purpose::STANDARD;
        Ok(SealedRecord {
            key_id,
            nonce: b64.encode(nonce),
            ciphertext: b64.encode(buf),
        })
    }

    fn open(&self, name: &str, r: &SealedRecord) -> Result<Vec<u8>, VaultError> {
        let key = {
            let ring = self
                .ring
                .read()
                .map_err(|_| VaultError::Store("poisoned".into()))?;
            ring.keys
                .get(&r.key_id)
                .cloned()
                .ok_or_else(|| VaultError::UnknownKey {
                    name: name.into(),
                    key_id: r.key_id.clone(),
                })?
        };
        let b64 = base64::engine::general_purpose::STANDARD;
        let nonce: [u8; NONCE_LEN] = b64
            .decode(&r.nonce)
            .ok()
            .and_then(|n| n.try_into().ok())
            .ok_or_else(|| VaultError::Tampered(name.into()))?;
        let mut buf = b64
            .decode(&r.ciphertext)
            .map_err(|_| VaultError::Tampered(name.into()))?;
        let plain = key
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(name.as_bytes()),
                &mut buf,
            )
            .map_err(|_| VaultError::Tampered(name.into()))?;
        Ok(plain.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> [u8; 32] {
        [b; 32]
    }

    #[test]
    fn round_trip_fresh_nonce_aad() {
        let store = Arc::new(MemoryStore::default());
        let v = Vault::new(store.clone(), "k1", &key(1)).unwrap();
        v.put("a", b"secret").unwrap();
        v.put("b", b"secret").unwrap();
        assert_eq!(v.get("a").unwrap().unwrap(), b"secret");
        let ra = store.get("a").unwrap().unwrap();
        let rb = store.get("b").unwrap().unwrap();
        assert_ne!(ra.nonce, rb.nonce);
        assert_ne!(ra.ciphertext, rb.ciphertext);
        assert!(!ra.ciphertext.contains("secret"));
        // moving a ciphertext to another name fails authentication
        store.put("c", &ra).unwrap();
        assert!(matches!(v.get("c"), Err(VaultError::Tampered(_))));
        // flipping a bit fails
        let mut bad = ra.clone();
        let mut ct = base64::engine::general_purpose::STANDARD
            .decode(&bad.ciphertext)
            .unwrap();
        ct[0] ^= 1;
        bad.ciphertext = base64::engine::general_purpose::STANDARD.encode(ct);
        store.put("a", &bad).unwrap();
        assert!(matches!(v.get("a"), Err(VaultError::Tampered(_))));
        assert!(v.get("missing").unwrap().is_none());
    }

    #[test]
    fn rotation_and_unknown_key() {
        let store = Arc::new(MemoryStore::default());
        let v = Vault::new(store.clone(), "k1", &key(1)).unwrap();
        v.put("a", b"one").unwrap();
        v.rotate("k2", &key(2)).unwrap();
        assert_eq!(v.get("a").unwrap().unwrap(), b"one");
        v.put("b", b"two").unwrap();
        assert_eq!(v.record_key_id("b").unwrap().as_deref(), Some("k2"));
        assert_eq!(v.reencrypt_all().unwrap(), 1);
        assert_eq!(v.record_key_id("a").unwrap().as_deref(), Some("k2"));
        // a vault that only knows k1 cannot read k2 records
        let old = Vault::new(store, "k1", &key(1)).unwrap();
        assert!(matches!(old.get("a"), Err(VaultError::UnknownKey { .. })));
    }

    #[test]
    fn keys_parse() {
        let k = generate_key().unwrap();
        assert_eq!(parse_key(&k).unwrap().len(), 32);
        assert!(parse_key("c2hvcnQ=").is_err());
        assert!(parse_key("%%%").is_err());
    }
}
