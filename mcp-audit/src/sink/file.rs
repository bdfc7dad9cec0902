//! JSON-lines files with size/time rotation and a SHA-256 hash chain.
//!
//! ## Durability (fsync policy)
//! A batch is handed to the kernel with one `write(2)` before the sink reports it written; the
//! audit layer (with [`crate::Durability::Written`]) releases a call's answer only after its
//! record is written. So after a `kill -9` of the gateway, every call a client saw answered has
//! its record in the file (the page cache belongs to the kernel, not the process). What a power
//! loss or kernel crash may lose depends on [`Fsync`]: `always` fsyncs each batch before
//! acknowledging it (nothing acknowledged is lost), `interval` (default, 1 s) loses at most the
//! last interval, `never` leaves it to the OS. On startup the sink drops a partial last line (a
//! write cut by the crash, whose call was never answered) and continues the chain from the last
//! complete record, so `verify` passes after a restart.
//!
//! A failed write (disk full, file-size limit) truncates the file back to its last complete
//! record, so a failure never leaves a partial record behind; the worker retries.

use std::{
    fs::{self, File, OpenOptions},
    io::{self, Read, Seek, SeekFrom, Write},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};

use super::{AuditSink, SinkError};
use crate::{
    AuditEvent,
    chain::{self, GENESIS, HeadRecord},
};

/// When the file sink calls `fsync`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fsync {
    /// After every batch, before acknowledging it.
    Always,
    /// At most once per `fsync_interval` (and on rotation and shutdown).
    #[default]
    Interval,
    /// Never explicitly (rotation and shutdown still sync).
    Never,
}

/// Settings of the JSON-lines sink.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSinkConfig {
    /// The log directory (created if missing).
    pub dir: PathBuf,
    /// File name prefix: files are `<prefix>-<first seq>.jsonl`.
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// Rotate when a file would grow past this many bytes (0: never).
    #[serde(default = "default_max_bytes")]
    pub max_bytes: u64,
    /// Rotate when a file is older than this many seconds (0: never).
    #[serde(default = "default_max_age_secs")]
    pub max_age_secs: u64,
    /// When to fsync.
    #[serde(default)]
    pub fsync: Fsync,
    /// The interval for `fsync = "interval"`, in milliseconds.
    #[serde(default = "default_fsync_interval_ms")]
    pub fsync_interval_ms: u64,
}

fn default_prefix() -> String {
    "audit".into()
}
fn default_max_bytes() -> u64 {
    100 << 20
}
fn default_max_age_secs() -> u64 {
    86_400
}
fn default_fsync_interval_ms() -> u64 {
    1000
}

impl FileSinkConfig {
    /// Defaults for a directory.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            prefix: default_prefix(),
            max_bytes: default_max_bytes(),
            max_age_secs: default_max_age_secs(),
            fsync: Fsync::default(),
            fsync_interval_ms: default_fsync_interval_ms(),
        }
    }

    /// Sets the rotation size.
    #[must_use]
    pub fn max_bytes(mut self, bytes: u64) -> Self {
        self.max_bytes = bytes;
        self
    }

    /// Sets the rotation age.
    #[must_use]
    pub fn max_age(mut self, age: Duration) -> Self {
        self.max_age_secs = age.as_secs();
        self
    }

    /// Sets the fsync policy.
    #[must_use]
    pub fn fsync(mut self, fsync: Fsync) -> Self {
        self.fsync = fsync;
        self
    }

    /// Checks the settings.
    pub fn validate(&self) -> Result<(), String> {
        if self.prefix.is_empty() || self.prefix.contains(['/', '\\']) {
            return Err(format!(
                "audit.file.prefix {:?} must be a non-empty file name",
                self.prefix
            ));
        }
        if self.max_bytes != 0 && self.max_bytes < 4096 {
            return Err(format!(
                "audit.file.max_bytes {} is below 4096 (use 0 for no size rotation)",
                self.max_bytes
            ));
        }
        if self.fsync == Fsync::Interval && self.fsync_interval_ms == 0 {
            return Err(
                "audit.file.fsync_interval_ms must be > 0 with fsync = \"interval\"".into(),
            );
        }
        Ok(())
    }
}

struct State {
    file: File,
    path: PathBuf,
    /// Bytes of complete records in the current file.
    len: u64,
    opened: Instant,
    next_seq: u64,
    prev_hash: String,
    synced_seq: u64,
    last_sync: Instant,
    dirty: bool,
}

/// The JSON-lines file sink with a hash chain.
pub struct JsonlFileSink {
    config: FileSinkConfig,
    state: Mutex<State>,
}

impl std::fmt::Debug for JsonlFileSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JsonlFileSink")
            .field("dir", &self.config.dir)
            .finish_non_exhaustive()
    }
}

impl JsonlFileSink {
    /// Opens (or recovers) the log in `config.dir`.
    pub fn open(config: FileSinkConfig) -> io::Result<Self> {
        config.validate().map_err(io::Error::other)?;
        fs::create_dir_all(&config.dir)?;
        let files = chain::log_files(&config.dir, &config.prefix)?;
        let (mut next_seq, mut prev_hash) = (1, GENESIS.to_owned());
        // Walk back from the newest file to the newest complete record.
        let mut reuse: Option<(PathBuf, u64)> = None;
        for (i, (first_seq, path)) in files.iter().enumerate().rev() {
            let (len, last) = recover_tail(path)?;
            if i + 1 == files.len() {
                reuse = Some((path.clone(), len));
            }
            if let Some(fields) = last {
                next_seq = fields.seq + 1;
                prev_hash = fields.hash;
                break;
            }
            if i == 0 {
                next_seq = *first_seq;
            }
        }
        let now = Instant::now();
        let (file, path, len) = match reuse {
            Some((path, len)) => {
                let mut file = OpenOptions::new().write(true).open(&path)?;
                file.seek(SeekFrom::Start(len))?;
                (file, path, len)
            }
            None => {
                let path = file_path(&config, next_seq);
                let file = OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .open(&path)?;
                (file, path, 0)
            }
        };
        Ok(Self {
            state: Mutex::new(State {
                file,
                path,
                len,
                opened: now,
                next_seq,
                prev_hash,
                synced_seq: next_seq - 1,
                last_sync: now,
                dirty: false,
            }),
            config,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &FileSinkConfig {
        &self.config
    }

    /// The next sequence number to be written.
    pub fn next_seq(&self) -> u64 {
        self.state.lock().map(|s| s.next_seq).unwrap_or(0)
    }

    fn sync(&self, st: &mut State) -> io::Result<()> {
        if st.dirty {
            st.file.sync_data()?;
            st.dirty = false;
        }
        st.last_sync = Instant::now();
        let last = st.next_seq - 1;
        if last > 0 && last != st.synced_seq {
            write_head(
                &self.config,
                &HeadRecord {
                    seq: last,
                    hash: st.prev_hash.clone(),
                },
            )?;
            st.synced_seq = last;
        }
        Ok(())
    }

    fn rotate(&self, st: &mut State) -> io::Result<()> {
        self.sync(st)?;
        let path = file_path(&self.config, st.next_seq);
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)?;
        sync_dir(&self.config.dir);
        st.file = file;
        st.path = path;
        st.len = 0;
        st.opened = Instant::now();
        Ok(())
    }

    /// Whether a record of `line` bytes after `pending` unwritten bytes needs a new file.
    fn needs_rotation(&self, st: &State, pending: u64, line: u64) -> bool {
        if st.len + pending == 0 {
            return false;
        }
        (self.config.max_bytes != 0 && st.len + pending + line > self.config.max_bytes)
            || (self.config.max_age_secs != 0
                && st.opened.elapsed() >= Duration::from_secs(self.config.max_age_secs))
    }

    /// Appends `buf` (complete records) or rolls the file back to its last complete record.
    fn append(st: &mut State, buf: &[u8]) -> io::Result<()> {
        match st.file.write_all(buf) {
            Ok(()) => {
                st.len += buf.len() as u64;
                st.dirty = true;
                Ok(())
            }
            Err(e) => {
                // Never leave a partial record behind (disk full, file-size limit).
                let _ = st.file.set_len(st.len);
                let _ = st.file.seek(SeekFrom::Start(st.len));
                Err(e)
            }
        }
    }
}

impl AuditSink for JsonlFileSink {
    fn write(&self, events: &[Arc<AuditEvent>]) -> Result<(), SinkError> {
        let mut guard = self
            .state
            .lock()
            .map_err(|_| SinkError::new(0, "audit file sink lock poisoned", None))?;
        let st = &mut *guard;
        let mut buf = Vec::with_capacity(events.len() * 1024);
        let mut committed = 0;
        // Chain state for the records in `buf`, applied only once they are written.
        let (mut seq, mut prev) = (st.next_seq, st.prev_hash.clone());
        for (i, event) in events.iter().enumerate() {
            let json = serde_json::to_string(&**event).map_err(|e| {
                SinkError::new(committed, "audit event does not serialize", Some(e.into()))
            })?;
            let (line, hash) = chain::chain_line(seq, &prev, &json);
            if self.needs_rotation(st, buf.len() as u64, line.len() as u64) {
                if !buf.is_empty() {
                    Self::append(st, &buf).map_err(|e| io_error(committed, &st.path, e))?;
                    st.next_seq = seq;
                    st.prev_hash = prev.clone();
                    committed = i;
                    buf.clear();
                }
                self.rotate(st)
                    .map_err(|e| io_error(committed, &st.path, e))?;
            }
            buf.extend_from_slice(line.as_bytes());
            seq += 1;
            prev = hash;
        }
        if !buf.is_empty() {
            Self::append(st, &buf).map_err(|e| io_error(committed, &st.path, e))?;
            st.next_seq = seq;
            st.prev_hash = prev;
        }
        let due = match self.config.fsync {
            Fsync::Always => true,
            Fsync::Interval => {
                st.last_sync.elapsed() >= Duration::from_millis(self.config.fsync_interval_ms)
            }
            Fsync::Never => false,
        };
        if due {
            self.sync(st)
                .map_err(|e| io_error(events.len(), &st.path, e))?;
        }
        Ok(())
    }

    fn tick(&self) -> Result<(), SinkError> {
        let mut st = self
            .state
            .lock()
            .map_err(|_| SinkError::new(0, "audit file sink lock poisoned", None))?;
        let age_due = self.config.max_age_secs != 0
            && st.len > 0
            && st.opened.elapsed() >= Duration::from_secs(self.config.max_age_secs);
        if age_due {
            self.rotate(&mut st).map_err(|e| io_error(0, &st.path, e))?;
        }
        let due = match self.config.fsync {
            Fsync::Never => false,
            _ => {
                st.dirty
                    && st.last_sync.elapsed()
                        >= Duration::from_millis(self.config.fsync_interval_ms)
            }
        };
        if due {
            self.sync(&mut st).map_err(|e| io_error(0, &st.path, e))?;
        }
        Ok(())
    }

    fn flush(&self) -> Result<(), SinkError> {
        let mut st = self
            .state
            .lock()
            .map_err(|_| SinkError::new(0, "audit file sink lock poisoned", None))?;
        self.sync(&mut st).map_err(|e| io_error(0, &st.path, e))
    }
}

fn io_error(written: usize, path: &Path, e: io::Error) -> SinkError {
    SinkError::new(
        written,
        format!("audit log {}: {e}", path.display()),
        Some(e.into()),
    )
}

fn file_path(config: &FileSinkConfig, first_seq: u64) -> PathBuf {
    config
        .dir
        .join(format!("{}-{first_seq:020}.jsonl", config.prefix))
}

fn write_head(config: &FileSinkConfig, head: &HeadRecord) -> io::Result<()> {
    let path = chain::head_path(&config.dir, &config.prefix);
    let tmp = path.with_extension("head.tmp");
    let mut f = File::create(&tmp)?;
    f.write_all(
        serde_json::to_string(head)
            .map_err(io::Error::other)?
            .as_bytes(),
    )?;
    f.sync_data()?;
    fs::rename(&tmp, &path)
}

fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Cuts a partial last line off `path`; returns the length of complete records and the chain
/// fields of the last one.
fn recover_tail(path: &Path) -> io::Result<(u64, Option<chain::ChainFields>)> {
    let mut file = OpenOptions::new().read(true).write(true).open(path)?;
    let mut data = Vec::new();
    file.read_to_end(&mut data)?;
    let complete = data.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    if complete < data.len() {
        tracing::warn!(
            file = %path.display(),
            bytes = data.len() - complete,
            "audit log ends in a partial record (the gateway stopped mid-write); removing it"
        );
        file.set_len(complete as u64)?;
        file.sync_data()?;
    }
    let body = &data[..complete];
    let last = body
        .strip_suffix(b"\n")
        .map(|b| b.rsplit(|c| *c == b'\n').next().unwrap_or(b))
        .and_then(|line| std::str::from_utf8(line).ok())
        .map(chain::check_line)
        .transpose()
        .map_err(|p| {
            io::Error::other(format!(
                "audit log {} last record is bad: {p}",
                path.display()
            ))
        })?;
    Ok((complete as u64, last))
}
