//! The bounded queue between the request path and the sinks.
//!
//! Every sink gets its own lane: a bounded queue and a worker thread that writes batches to the
//! sink, retries failures with backoff, and ticks the sink while idle. The request path only ever
//! puts an event into each lane's queue. When a queue is full, the lane's [`Overflow`] policy
//! applies:
//! - [`Overflow::Block`]: the caller waits (asynchronously) for room; nothing is lost.
//! - [`Overflow::Spill`]: the event is appended to a spill file in the lane's spill directory and
//!   the call goes on; the worker replays spilled events once it catches up (and on the next start
//!   after a crash). If the spill file cannot be written (disk full), the lane falls back to
//!   blocking.
//!
//! Nothing is dropped silently: the only ways an event is not written are a sink that keeps
//! failing past its `max_retries`, or a lane that was shut down; both count in
//! [`LaneStats::dropped`] and log at error level.

use std::{
    collections::VecDeque,
    fmt,
    fs::{self, File, OpenOptions},
    io::{self, BufRead, BufReader, Write},
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, mpsc, oneshot};

use crate::{AuditEvent, sink::AuditSink};

/// How long the audit worker lets events gather after waking for one.
const LINGER: Duration = Duration::from_micros(500);

/// What a lane does when its queue is full.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Overflow {
    /// Wait for room: lose nothing, slow the caller down.
    Block,
    /// Append to a spill file in this directory and go on.
    Spill(PathBuf),
}

/// Settings of one lane.
#[derive(Debug, Clone)]
pub struct LaneConfig {
    /// The lane's name (used in metrics and spill file names).
    pub name: String,
    /// Queue capacity in events.
    pub capacity: usize,
    /// What to do when the queue is full.
    pub overflow: Overflow,
    /// Whether this sink acknowledges records to the layer (see [`crate::Durability`]).
    pub durable: bool,
    /// Retries of a failing batch before its events are counted as dropped (`None`: forever).
    pub max_retries: Option<u32>,
    /// How often the idle worker ticks the sink.
    pub tick: Duration,
    /// Largest batch handed to the sink.
    pub max_batch: usize,
}

impl LaneConfig {
    /// A lane with a 8192-event blocking queue.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            capacity: 8192,
            overflow: Overflow::Block,
            durable: false,
            max_retries: None,
            tick: Duration::from_millis(200),
            max_batch: 512,
        }
    }

    /// Sets the capacity.
    #[must_use]
    pub fn capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity.max(1);
        self
    }

    /// Sets the overflow policy.
    #[must_use]
    pub fn overflow(mut self, overflow: Overflow) -> Self {
        self.overflow = overflow;
        self
    }

    /// Marks the lane as the durable one.
    #[must_use]
    pub fn durable(mut self, durable: bool) -> Self {
        self.durable = durable;
        self
    }

    /// Sets the retry limit.
    #[must_use]
    pub fn max_retries(mut self, retries: Option<u32>) -> Self {
        self.max_retries = retries;
        self
    }
}

/// Counters of one lane.
#[derive(Debug, Default)]
pub struct LaneCounters {
    submitted: AtomicU64,
    written: AtomicU64,
    spilled: AtomicU64,
    blocked: AtomicU64,
    errors: AtomicU64,
    dropped: AtomicU64,
    spill_errors: AtomicU64,
}

/// A snapshot of a lane's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LaneStats {
    /// The lane.
    pub name: String,
    /// Events handed to the lane.
    pub submitted: u64,
    /// Events the sink took.
    pub written: u64,
    /// Events that went to the spill file.
    pub spilled: u64,
    /// Times a caller had to wait for room.
    pub blocked: u64,
    /// Failed sink writes (each retried).
    pub errors: u64,
    /// Events given up on (sink kept failing, or lane shut down). Never silent: logged too.
    pub dropped: u64,
    /// Failed spill writes (the caller then blocked instead).
    pub spill_errors: u64,
    /// Events in the queue or spill file right now.
    pub pending: u64,
}

struct Item {
    event: Arc<AuditEvent>,
    ack: Option<oneshot::Sender<()>>,
}

struct Spill {
    dir: PathBuf,
    name: String,
    file: Mutex<Option<File>>,
    pending: AtomicU64,
}

impl Spill {
    fn path(&self) -> PathBuf {
        self.dir.join(format!("{}.spill.jsonl", self.name))
    }

    fn append(&self, event: &AuditEvent) -> io::Result<()> {
        let mut line = serde_json::to_vec(event).map_err(io::Error::other)?;
        line.push(b'\n');
        let mut guard = self
            .file
            .lock()
            .map_err(|_| io::Error::other("spill lock poisoned"))?;
        if guard.is_none() {
            fs::create_dir_all(&self.dir)?;
            *guard = Some(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(self.path())?,
            );
        }
        let Some(file) = guard.as_mut() else {
            return Err(io::Error::other("spill file unavailable"));
        };
        let len = file.metadata()?.len();
        if let Err(e) = file.write_all(&line) {
            let _ = file.set_len(len);
            return Err(e);
        }
        self.pending.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    /// Moves the spill file aside for replay; returns the replay files (leftovers of a crash too).
    fn take(&self) -> io::Result<Vec<PathBuf>> {
        let mut guard = self
            .file
            .lock()
            .map_err(|_| io::Error::other("spill lock poisoned"))?;
        *guard = None;
        let path = self.path();
        if path.exists() {
            let mut n = 0u64;
            let target = loop {
                let t = self.dir.join(format!("{}.replay-{n}.jsonl", self.name));
                if !t.exists() {
                    break t;
                }
                n += 1;
            };
            fs::rename(&path, &target)?;
        }
        self.pending.store(0, Ordering::SeqCst);
        drop(guard);
        self.replay_files()
    }

    fn replay_files(&self) -> io::Result<Vec<PathBuf>> {
        let prefix = format!("{}.replay-", self.name);
        let mut files: Vec<(u64, PathBuf)> = Vec::new();
        if let Ok(dir) = fs::read_dir(&self.dir) {
            for entry in dir.flatten() {
                let name = entry.file_name();
                if let Some(n) = name
                    .to_str()
                    .and_then(|n| n.strip_prefix(&prefix))
                    .and_then(|n| n.strip_suffix(".jsonl"))
                    .and_then(|n| n.parse().ok())
                {
                    files.push((n, entry.path()));
                }
            }
        }
        files.sort();
        Ok(files.into_iter().map(|(_, p)| p).collect())
    }
}

struct Lane {
    config: LaneConfig,
    tx: mpsc::Sender<Item>,
    counters: Arc<LaneCounters>,
    spill: Option<Arc<Spill>>,
    progress: Arc<Notify>,
    sink: Arc<dyn AuditSink>,
}

/// The handle the request path uses to submit events to every sink's lane. Cheap to clone.
#[derive(Clone)]
pub struct Auditor {
    lanes: Arc<Vec<Lane>>,
}

impl fmt::Debug for Auditor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.lanes.iter().map(|l| &l.config.name))
            .finish()
    }
}

/// A builder for [`Auditor`].
#[derive(Default)]
pub struct AuditorBuilder {
    lanes: Vec<(LaneConfig, Arc<dyn AuditSink>)>,
}

impl fmt::Debug for AuditorBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.lanes.iter().map(|(c, _)| &c.name))
            .finish()
    }
}

impl AuditorBuilder {
    /// Adds a sink with its lane settings.
    #[must_use]
    pub fn sink(mut self, config: LaneConfig, sink: impl AuditSink) -> Self {
        self.lanes.push((config, Arc::new(sink)));
        self
    }

    /// Adds a shared sink.
    #[must_use]
    pub fn shared_sink(mut self, config: LaneConfig, sink: Arc<dyn AuditSink>) -> Self {
        self.lanes.push((config, sink));
        self
    }

    /// Starts one worker thread per sink.
    pub fn build(self) -> io::Result<Auditor> {
        let mut lanes = Vec::with_capacity(self.lanes.len());
        for (config, sink) in self.lanes {
            let (tx, rx) = mpsc::channel(config.capacity.max(1));
            let counters = Arc::new(LaneCounters::default());
            let spill = match &config.overflow {
                Overflow::Spill(dir) => {
                    fs::create_dir_all(dir)?;
                    Some(Arc::new(Spill {
                        dir: dir.clone(),
                        name: config.name.clone(),
                        file: Mutex::new(None),
                        pending: AtomicU64::new(0),
                    }))
                }
                Overflow::Block => None,
            };
            let progress = Arc::new(Notify::new());
            let worker = Worker {
                config: config.clone(),
                sink: sink.clone(),
                counters: counters.clone(),
                spill: spill.clone(),
                progress: progress.clone(),
            };
            std::thread::Builder::new()
                .name(format!("audit-{}", config.name))
                .spawn(move || worker.run(rx))?;
            lanes.push(Lane {
                config,
                tx,
                counters,
                spill,
                progress,
                sink,
            });
        }
        Ok(Auditor {
            lanes: Arc::new(lanes),
        })
    }
}

/// What the caller must await after [`Auditor::submit`]: nothing, or room in a queue / an ack.
pub enum Submitted {
    /// Queued (and acknowledged if asked); nothing to wait for.
    Done,
    /// Wait for this.
    Wait(BoxFuture<'static, ()>),
}

impl fmt::Debug for Submitted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Done => "Done",
            Self::Wait(_) => "Wait",
        })
    }
}

impl Auditor {
    /// A builder.
    pub fn builder() -> AuditorBuilder {
        AuditorBuilder::default()
    }

    /// Hands an event to every lane. With `ack`, the returned wait also covers the durable lanes
    /// writing it (see [`crate::Durability::Written`]).
    pub fn submit(&self, event: AuditEvent, ack: bool) -> Submitted {
        let event = Arc::new(event);
        let mut waits: Vec<BoxFuture<'static, ()>> = Vec::new();
        for lane in self.lanes.iter() {
            lane.counters.submitted.fetch_add(1, Ordering::Relaxed);
            let (ack_tx, ack_rx) = if ack && lane.config.durable {
                let (t, r) = oneshot::channel();
                (Some(t), Some(r))
            } else {
                (None, None)
            };
            let item = Item {
                event: event.clone(),
                ack: ack_tx,
            };
            match lane.tx.try_send(item) {
                Ok(()) => {
                    if let Some(rx) = ack_rx {
                        waits.push(Box::pin(async move {
                            let _ = rx.await;
                        }));
                    }
                }
                Err(mpsc::error::TrySendError::Full(item)) => {
                    if let Some(spill) = &lane.spill {
                        match spill.append(&item.event) {
                            Ok(()) => {
                                lane.counters.spilled.fetch_add(1, Ordering::Relaxed);
                                lane.progress.notify_waiters();
                                // Spilled means on disk: acknowledged.
                                continue;
                            }
                            Err(e) => {
                                lane.counters.spill_errors.fetch_add(1, Ordering::Relaxed);
                                tracing::error!(lane = %lane.config.name, error = %e, "audit spill failed; blocking instead");
                            }
                        }
                    }
                    lane.counters.blocked.fetch_add(1, Ordering::Relaxed);
                    let tx = lane.tx.clone();
                    let counters = lane.counters.clone();
                    let name = lane.config.name.clone();
                    waits.push(Box::pin(async move {
                        if tx.send(item).await.is_err() {
                            counters.dropped.fetch_add(1, Ordering::Relaxed);
                            tracing::error!(lane = %name, "audit lane is shut down; event dropped");
                        } else if let Some(rx) = ack_rx {
                            let _ = rx.await;
                        }
                    }));
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    lane.counters.dropped.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(lane = %lane.config.name, "audit lane is shut down; event dropped");
                }
            }
        }
        match waits.len() {
            0 => Submitted::Done,
            1 => Submitted::Wait(waits.pop().unwrap_or_else(|| Box::pin(async {}))),
            _ => Submitted::Wait(Box::pin(async move {
                futures::future::join_all(waits).await;
            })),
        }
    }

    /// Submits and waits (convenience for async callers).
    pub async fn record(&self, event: AuditEvent, ack: bool) {
        if let Submitted::Wait(w) = self.submit(event, ack) {
            w.await;
        }
    }

    /// Counters of every lane.
    pub fn stats(&self) -> Vec<LaneStats> {
        self.lanes
            .iter()
            .map(|l| {
                let c = &l.counters;
                let submitted = c.submitted.load(Ordering::SeqCst);
                let written = c.written.load(Ordering::SeqCst);
                let dropped = c.dropped.load(Ordering::SeqCst);
                LaneStats {
                    name: l.config.name.clone(),
                    submitted,
                    written,
                    spilled: c.spilled.load(Ordering::SeqCst),
                    blocked: c.blocked.load(Ordering::SeqCst),
                    errors: c.errors.load(Ordering::SeqCst),
                    dropped,
                    spill_errors: c.spill_errors.load(Ordering::SeqCst),
                    pending: submitted.saturating_sub(written + dropped),
                }
            })
            .collect()
    }

    /// Waits until every event submitted so far is written (or counted as dropped), then flushes
    /// the sinks. Gives up after `timeout`; returns whether everything was written.
    pub async fn flush(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        for lane in self.lanes.iter() {
            loop {
                let notified = lane.progress.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                let c = &lane.counters;
                let done = c.written.load(Ordering::SeqCst) + c.dropped.load(Ordering::SeqCst);
                if done >= c.submitted.load(Ordering::SeqCst) {
                    break;
                }
                if lane
                    .spill
                    .as_ref()
                    .is_some_and(|s| s.pending.load(Ordering::SeqCst) > 0)
                {
                    // Wake the worker so it replays the spill file even if its queue is empty.
                    // It is not an event: the counters never see it.
                    let _ = lane.tx.try_send(Item {
                        event: Arc::new(wake_event()),
                        ack: None,
                    });
                }
                if tokio::time::timeout_at(deadline, notified).await.is_err() {
                    return false;
                }
            }
            let sink = lane.sink.clone();
            let _ = tokio::task::spawn_blocking(move || sink.flush()).await;
        }
        true
    }
}

/// An internal no-op item used to wake a worker; never reaches a sink.
fn wake_event() -> AuditEvent {
    AuditEvent::new(
        WAKE_METHOD,
        mcp_gateway_core::Direction::Request,
        crate::MessageKind::Notification,
        crate::Leg::ClientToGateway,
    )
}
const WAKE_METHOD: &str = "\u{0}audit/wake";

// === Worker ===

struct Worker {
    config: LaneConfig,
    sink: Arc<dyn AuditSink>,
    counters: Arc<LaneCounters>,
    spill: Option<Arc<Spill>>,
    progress: Arc<Notify>,
}

impl Worker {
    fn run(self, mut rx: mpsc::Receiver<Item>) {
        let rt = match tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                tracing::error!(lane = %self.config.name, error = %e, "audit worker cannot start");
                return;
            }
        };
        // Replay what a previous run spilled and never wrote.
        self.replay_spill(false);
        let mut batch: VecDeque<Item> = VecDeque::new();
        let mut last_batch = 0;
        loop {
            let first =
                rt.block_on(async { tokio::time::timeout(self.config.tick, rx.recv()).await });
            match first {
                Ok(Some(item)) => {
                    batch.push_back(item);
                    // Under load (the last batch had company), let a burst gather before
                    // draining: while this thread sleeps, senders queue without waking it, so
                    // one wake-up serves a batch instead of every event (a tenth of the full
                    // stack's CPU went into waking this thread). A lone caller is not made to
                    // wait (with durability "written" its answer waits for this write).
                    if last_batch > 1 && rx.is_empty() {
                        std::thread::sleep(LINGER);
                    }
                    while batch.len() < self.config.max_batch {
                        match rx.try_recv() {
                            Ok(item) => batch.push_back(item),
                            Err(_) => break,
                        }
                    }
                    last_batch = batch.len();
                    self.write_batch(&mut batch);
                    if rx.is_empty() {
                        self.replay_spill(true);
                    }
                }
                Ok(None) => {
                    self.replay_spill(true);
                    if let Err(e) = self.sink.flush() {
                        tracing::error!(lane = %self.config.name, error = %e, "audit sink flush on shutdown failed");
                    }
                    return;
                }
                Err(_) => {
                    self.replay_spill(true);
                    if let Err(e) = self.sink.tick() {
                        self.counters.errors.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(lane = %self.config.name, error = %e, "audit sink tick failed");
                    }
                }
            }
        }
    }

    fn write_batch(&self, batch: &mut VecDeque<Item>) {
        // Wake items are not events: they are neither written nor counted.
        let events: Vec<Arc<AuditEvent>> = batch
            .iter()
            .filter(|i| i.event.method != WAKE_METHOD)
            .map(|i| i.event.clone())
            .collect();
        let written = self.write_events(&events);
        let lost = events.len() - written;
        self.counters
            .written
            .fetch_add(written as u64, Ordering::SeqCst);
        if lost > 0 {
            self.counters
                .dropped
                .fetch_add(lost as u64, Ordering::SeqCst);
        }
        // Ack the written ones; dropping the senders of lost ones releases their callers.
        for (i, item) in batch
            .drain(..)
            .filter(|i| i.event.method != WAKE_METHOD)
            .enumerate()
        {
            if i < written
                && let Some(ack) = item.ack
            {
                let _ = ack.send(());
            }
        }
        self.progress.notify_waiters();
    }

    /// Writes with retries; returns how many leading events were written.
    fn write_events(&self, events: &[Arc<AuditEvent>]) -> usize {
        let mut done = 0;
        let mut attempts = 0u32;
        let mut backoff = Duration::from_millis(10);
        while done < events.len() {
            match self.sink.write(&events[done..]) {
                Ok(()) => done = events.len(),
                Err(e) => {
                    done += e.written.min(events.len() - done);
                    self.counters.errors.fetch_add(1, Ordering::SeqCst);
                    attempts += 1;
                    if self.config.max_retries.is_some_and(|max| attempts > max) {
                        tracing::error!(
                            lane = %self.config.name,
                            error = %e,
                            dropped = events.len() - done,
                            "audit sink keeps failing; events dropped"
                        );
                        return done;
                    }
                    tracing::warn!(lane = %self.config.name, error = %e, attempt = attempts, "audit sink write failed; retrying");
                    self.progress.notify_waiters();
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
        }
        done
    }

    fn replay_spill(&self, only_if_pending: bool) {
        let Some(spill) = &self.spill else { return };
        if only_if_pending && spill.pending.load(Ordering::SeqCst) == 0 {
            return;
        }
        let files = match if only_if_pending {
            spill.take()
        } else {
            spill.take().or_else(|_| spill.replay_files())
        } {
            Ok(f) => f,
            Err(e) => {
                tracing::error!(lane = %self.config.name, error = %e, "audit spill replay failed");
                return;
            }
        };
        for path in files {
            let Ok(file) = File::open(&path) else {
                continue;
            };
            let mut chunk = Vec::new();
            let mut all_ok = true;
            for line in BufReader::new(file).split(b'\n') {
                let Ok(line) = line else { break };
                match serde_json::from_slice::<AuditEvent>(&line) {
                    Ok(ev) => chunk.push(Arc::new(ev)),
                    Err(e) => {
                        // A partial last line: the process died mid-spill, before that call was
                        // answered. Counted, logged, never silent.
                        self.counters.dropped.fetch_add(1, Ordering::SeqCst);
                        tracing::error!(lane = %self.config.name, error = %e, "unreadable spilled audit event skipped");
                    }
                }
                if chunk.len() >= self.config.max_batch {
                    all_ok &= self.flush_replayed(&mut chunk);
                }
            }
            all_ok &= self.flush_replayed(&mut chunk);
            if all_ok {
                let _ = fs::remove_file(&path);
            }
        }
        self.progress.notify_waiters();
    }

    fn flush_replayed(&self, chunk: &mut Vec<Arc<AuditEvent>>) -> bool {
        let n = chunk.len();
        let written = self.write_events(chunk);
        // Spilled events were counted as submitted when they were spilled.
        self.counters
            .written
            .fetch_add(written as u64, Ordering::SeqCst);
        self.counters
            .dropped
            .fetch_add((n - written) as u64, Ordering::SeqCst);
        chunk.clear();
        written == n
    }
}
