//! In-memory session state: a sharded map of live sessions, their SSE streams, replay buffers,
//! pending server-to-client requests and in-flight client requests.
//!
//! Everything here is a cache of what the sealed id says plus what only this process can know
//! (open streams). Losing it (idle reaping, another replica) loses only replay history.

use std::{
    collections::{HashMap, HashSet, VecDeque, hash_map::DefaultHasher},
    hash::{Hash, Hasher},
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use serde_json::Value;
use tokio::{
    sync::{mpsc, oneshot},
    task::AbortHandle,
};
use tokio_util::sync::CancellationToken;

use super::body::sse_event;
use crate::message::{ErrorData, SessionInfo};

const SHARDS: usize = 64;

type Shard = Mutex<HashMap<Arc<str>, Arc<LiveSession>>>;

/// Locks a mutex, recovering from poisoning (state stays usable after a panic elsewhere).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

// === Store ===

/// All live sessions of one adapter, plus the ids DELETEd on this process.
pub(crate) struct Store {
    shards: Box<[Shard]>,
    deleted: Mutex<Deleted>,
    epoch: Instant,
}

struct Deleted {
    set: HashSet<Arc<str>>,
    order: VecDeque<Arc<str>>,
    capacity: usize,
}

impl Store {
    pub(crate) fn new(deleted_capacity: usize) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            deleted: Mutex::new(Deleted {
                set: HashSet::new(),
                order: VecDeque::new(),
                capacity: deleted_capacity,
            }),
            epoch: Instant::now(),
        }
    }

    fn shard(&self, id: &str) -> &Shard {
        let mut h = DefaultHasher::new();
        id.hash(&mut h);
        &self.shards[(h.finish() as usize) % SHARDS]
    }

    /// Milliseconds since the store was made (a cheap monotonic clock for idle tracking).
    pub(crate) fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    pub(crate) fn get(&self, id: &str) -> Option<Arc<LiveSession>> {
        lock(self.shard(id)).get(id).cloned()
    }

    /// Inserts a session unless one with the same id is already there; returns the one stored.
    pub(crate) fn insert(&self, session: Arc<LiveSession>) -> Arc<LiveSession> {
        let mut shard = lock(self.shard(&session.id));
        shard.entry(session.id.clone()).or_insert(session).clone()
    }

    pub(crate) fn is_deleted(&self, id: &str) -> bool {
        lock(&self.deleted).set.contains(id)
    }

    /// Ends a session on this process and remembers its id as deleted.
    pub(crate) fn delete(&self, id: &str) {
        let removed = lock(self.shard(id)).remove(id);
        if let Some(session) = removed {
            session.close();
        }
        let mut d = lock(&self.deleted);
        if d.capacity == 0 {
            return;
        }
        let id: Arc<str> = id.into();
        if d.set.insert(id.clone()) {
            d.order.push_back(id);
            while d.order.len() > d.capacity {
                if let Some(old) = d.order.pop_front() {
                    d.set.remove(&old);
                }
            }
        }
    }

    /// Drops sessions idle for longer than `idle` that have no open stream and nothing running.
    pub(crate) fn reap(&self, idle: Duration) -> usize {
        let now = self.now_ms();
        let idle = idle.as_millis() as u64;
        let mut reaped = 0;
        for shard in self.shards.iter() {
            let mut shard = lock(shard);
            shard.retain(|_, s| {
                let keep =
                    now.saturating_sub(s.last_seen.load(Ordering::Relaxed)) < idle || s.busy();
                if !keep {
                    s.close();
                    reaped += 1;
                }
                keep
            });
        }
        reaped
    }

    /// How many sessions are live.
    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(|s| lock(s).len()).sum()
    }

    /// Closes every session's streams (shutdown).
    pub(crate) fn close_all(&self) {
        for shard in self.shards.iter() {
            for s in lock(shard).values() {
                s.close();
            }
        }
    }
}

// === LiveSession ===

/// A legacy session's in-memory state.
pub(crate) struct LiveSession {
    pub(crate) id: Arc<str>,
    pub(crate) info: Arc<SessionInfo>,
    pub(crate) binding: [u8; 32],
    pub(crate) protocol_version: Arc<str>,
    /// Creation time from the sealed id (seconds since the Unix epoch).
    pub(crate) created_at: u64,
    pub(crate) upstream: Option<crate::session::UpstreamSessions>,
    pub(crate) last_seen: AtomicU64,
    pub(crate) closed: CancellationToken,
    replay_capacity: usize,
    state: Mutex<SessionState>,
}

#[derive(Default)]
struct SessionState {
    subscriptions: HashSet<String>,
    pending: HashMap<String, oneshot::Sender<Result<Value, ErrorData>>>,
    inflight: HashMap<String, AbortHandle>,
    streams: HashMap<u64, Arc<Stream>>,
    replay: VecDeque<(u64, u64, Bytes)>,
    get_stream: Option<Arc<Stream>>,
}

impl LiveSession {
    pub(crate) fn new(
        id: Arc<str>,
        info: Arc<SessionInfo>,
        binding: [u8; 32],
        created_at: u64,
        upstream: Option<crate::session::UpstreamSessions>,
        replay_capacity: usize,
        now_ms: u64,
    ) -> Self {
        let protocol_version = info.protocol_version.clone().unwrap_or_else(|| "".into());
        Self {
            id,
            info,
            binding,
            protocol_version,
            created_at,
            upstream,
            last_seen: AtomicU64::new(now_ms),
            closed: CancellationToken::new(),
            replay_capacity,
            state: Mutex::new(SessionState::default()),
        }
    }

    pub(crate) fn touch(&self, now_ms: u64) {
        self.last_seen.store(now_ms, Ordering::Relaxed);
    }

    fn busy(&self) -> bool {
        let st = lock(&self.state);
        !st.inflight.is_empty()
            || !st.pending.is_empty()
            || st.get_stream.as_ref().is_some_and(|s| s.attached())
    }

    fn close(&self) {
        self.closed.cancel();
        let mut st = lock(&self.state);
        for (_, h) in st.inflight.drain() {
            h.abort();
        }
        st.pending.clear();
        if let Some(g) = st.get_stream.take() {
            g.detach();
        }
    }

    pub(crate) fn subscribe(&self, uri: String) {
        lock(&self.state).subscriptions.insert(uri);
    }

    pub(crate) fn unsubscribe(&self, uri: &str) {
        lock(&self.state).subscriptions.remove(uri);
    }

    pub(crate) fn is_subscribed(&self, uri: &str) -> bool {
        lock(&self.state).subscriptions.contains(uri)
    }

    pub(crate) fn add_pending(&self, id: String, tx: oneshot::Sender<Result<Value, ErrorData>>) {
        lock(&self.state).pending.insert(id, tx);
    }

    pub(crate) fn remove_pending(&self, id: &str) {
        lock(&self.state).pending.remove(id);
    }

    /// Resolves a pending server-to-client request; false if nothing waited for that id.
    pub(crate) fn resolve(&self, id: &str, answer: Result<Value, ErrorData>) -> bool {
        let tx = lock(&self.state).pending.remove(id);
        tx.is_some_and(|tx| tx.send(answer).is_ok())
    }

    pub(crate) fn add_inflight(&self, id: String, handle: AbortHandle) {
        lock(&self.state).inflight.insert(id, handle);
    }

    pub(crate) fn remove_inflight(&self, id: &str) {
        lock(&self.state).inflight.remove(id);
    }

    /// Aborts an in-flight request (client cancellation); true if one was running.
    pub(crate) fn cancel(&self, id: &str) -> bool {
        let h = lock(&self.state).inflight.remove(id);
        h.map(|h| h.abort()).is_some()
    }

    pub(crate) fn add_stream(&self, stream: Arc<Stream>) {
        lock(&self.state).streams.insert(stream.id, stream);
    }

    pub(crate) fn remove_stream(&self, id: u64) {
        lock(&self.state).streams.remove(&id);
    }

    pub(crate) fn stream(&self, id: u64) -> Option<Arc<Stream>> {
        let st = lock(&self.state);
        match &st.get_stream {
            Some(g) if g.id == id => Some(g.clone()),
            _ => st.streams.get(&id).cloned(),
        }
    }

    /// The GET stream, if one was ever opened.
    pub(crate) fn get_stream(&self) -> Option<Arc<Stream>> {
        lock(&self.state).get_stream.clone()
    }

    /// Sets the GET stream if none exists; returns the session's GET stream and whether it is new.
    pub(crate) fn get_or_set_get_stream(
        &self,
        make: impl FnOnce() -> Arc<Stream>,
    ) -> (Arc<Stream>, bool) {
        let mut st = lock(&self.state);
        if let Some(g) = &st.get_stream {
            return (g.clone(), false);
        }
        let g = make();
        st.get_stream = Some(g.clone());
        (g, true)
    }

    fn buffer(&self, stream: u64, seq: u64, event: Bytes) {
        if self.replay_capacity == 0 {
            return;
        }
        let mut st = lock(&self.state);
        st.replay.push_back((stream, seq, event));
        while st.replay.len() > self.replay_capacity {
            st.replay.pop_front();
        }
    }

    fn replay_after(&self, stream: u64, seq: u64) -> Vec<Bytes> {
        lock(&self.state)
            .replay
            .iter()
            .filter(|(s, n, _)| *s == stream && *n > seq)
            .map(|(_, _, e)| e.clone())
            .collect()
    }
}

// === Stream ===

/// What a request's stream produced first: decides between a JSON and an SSE response.
pub(crate) enum First {
    /// The final response came before anything else: answer `application/json` (with a
    /// `Retry-After` when the response asked for one).
    Json(Bytes, Option<Duration>),
    /// A message came first: answer `text/event-stream`; this first event is already queued.
    Sse,
    /// Nothing will come (cancelled).
    Nothing,
}

/// One SSE stream: a POST's response stream or the session's GET stream.
pub(crate) struct Stream {
    pub(crate) id: u64,
    session: Option<Arc<LiveSession>>,
    /// Messages may never go elsewhere (the GET stream, listen streams, initialize).
    pub(crate) kind: StreamKind,
    inner: Mutex<StreamInner>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum StreamKind {
    /// A POST's response stream: may switch to SSE, detached messages go to the GET stream.
    Post,
    /// The GET stream or a `subscriptions/listen` stream: always SSE.
    Standing,
    /// `initialize`: messages are dropped, only the final response counts.
    JsonOnly,
}

struct StreamInner {
    seq: u64,
    sse: bool,
    done: bool,
    first: Option<oneshot::Sender<First>>,
    tx: Option<mpsc::UnboundedSender<Bytes>>,
}

impl Stream {
    /// A stream whose first message or final response resolves the returned receiver.
    pub(crate) fn new(
        id: u64,
        session: Option<Arc<LiveSession>>,
        kind: StreamKind,
    ) -> (
        Arc<Self>,
        oneshot::Receiver<First>,
        mpsc::UnboundedReceiver<Bytes>,
    ) {
        let (first_tx, first_rx) = oneshot::channel();
        let (tx, rx) = mpsc::unbounded_channel();
        let stream = Arc::new(Self {
            id,
            session,
            kind,
            inner: Mutex::new(StreamInner {
                seq: 0,
                sse: kind == StreamKind::Standing,
                done: false,
                first: Some(first_tx),
                tx: Some(tx),
            }),
        });
        (stream, first_rx, rx)
    }

    fn event_id(&self, seq: u64) -> String {
        format!("{}-{}", self.id, seq)
    }

    /// Whether a client is reading this stream right now.
    pub(crate) fn attached(&self) -> bool {
        lock(&self.inner)
            .tx
            .as_ref()
            .is_some_and(|tx| !tx.is_closed())
    }

    /// Whether this stream has ended (final response sent or cancelled).
    pub(crate) fn done(&self) -> bool {
        lock(&self.inner).done
    }

    pub(crate) fn detach(&self) {
        lock(&self.inner).tx = None;
    }

    /// Sends a JSON-RPC message (notification or server-to-client request) on this stream. When
    /// the client is gone, it goes to the session's GET stream if one is attached, else into the
    /// replay buffer for `Last-Event-ID` resumption.
    pub(crate) fn message(&self, json: &[u8]) {
        let mut inner = lock(&self.inner);
        if inner.done {
            return;
        }
        if self.kind == StreamKind::JsonOnly {
            return;
        }
        let detached = inner.tx.as_ref().is_none_or(|tx| tx.is_closed());
        if detached && inner.sse && self.kind == StreamKind::Post {
            // The client went away from this POST stream: prefer its GET stream.
            if let Some(get) = self.session.as_ref().and_then(|s| s.get_stream())
                && get.attached()
            {
                drop(inner);
                get.message(json);
                return;
            }
        }
        inner.seq += 1;
        let seq = inner.seq;
        let with_id = self.session.is_some();
        let event = sse_event(with_id.then(|| self.event_id(seq)).as_deref(), json);
        if let Some(s) = &self.session {
            s.buffer(self.id, seq, event.clone());
        }
        if !inner.sse {
            inner.sse = true;
            if let Some(first) = inner.first.take() {
                let _ = first.send(First::Sse);
            }
        }
        if let Some(tx) = &inner.tx
            && tx.send(event).is_err()
        {
            inner.tx = None;
        }
    }

    /// Turns a still-silent stream into SSE with a priming event (see
    /// [`HttpConfig::stream_after`](super::HttpConfig::stream_after)). `false` when the stream
    /// has already answered or streamed, or has no session to resume in.
    pub(crate) fn prime(&self, retry: std::time::Duration) -> bool {
        let mut inner = lock(&self.inner);
        if inner.done || inner.sse || self.session.is_none() || self.kind != StreamKind::Post {
            return false;
        }
        inner.sse = true;
        if let Some(first) = inner.first.take() {
            let _ = first.send(First::Sse);
        }
        let event = super::body::priming_event(&self.event_id(inner.seq), retry);
        if let Some(tx) = &inner.tx
            && tx.send(event).is_err()
        {
            inner.tx = None;
        }
        true
    }

    /// Sends the final response and ends the stream.
    pub(crate) fn finish(&self, json: Vec<u8>) {
        self.finish_with(json, None);
    }

    /// [`Stream::finish`] with a `Retry-After` for a plain JSON answer.
    pub(crate) fn finish_with(&self, json: Vec<u8>, retry_after: Option<Duration>) {
        let mut inner = lock(&self.inner);
        if inner.done {
            return;
        }
        inner.done = true;
        if !inner.sse {
            if let Some(first) = inner.first.take() {
                let _ = first.send(First::Json(Bytes::from(json), retry_after));
            }
            inner.tx = None;
            return;
        }
        inner.seq += 1;
        let seq = inner.seq;
        let event = sse_event(
            self.session
                .is_some()
                .then(|| self.event_id(seq))
                .as_deref(),
            &json,
        );
        if let Some(s) = &self.session {
            s.buffer(self.id, seq, event.clone());
        }
        if let Some(tx) = inner.tx.take() {
            let _ = tx.send(event);
        }
    }

    /// Ends the stream with nothing more (cancellation, shutdown).
    pub(crate) fn abandon(&self) {
        let mut inner = lock(&self.inner);
        inner.done = true;
        if let Some(first) = inner.first.take() {
            let _ = first.send(First::Nothing);
        }
        inner.tx = None;
    }

    /// Attaches a new reader after `Last-Event-ID`: replays buffered events after `after`, then
    /// (if the stream is still running) delivers what follows. Returns the reader.
    pub(crate) fn resume(&self, after: u64) -> mpsc::UnboundedReceiver<Bytes> {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut inner = lock(&self.inner);
        if let Some(s) = &self.session {
            for e in s.replay_after(self.id, after) {
                let _ = tx.send(e);
            }
        }
        if !inner.done {
            inner.tx = Some(tx);
        }
        rx
    }

    /// Attaches a fresh reader to a standing stream (a new GET after the old one went away).
    /// `None` when a reader is already attached (one GET stream per session).
    pub(crate) fn attach(&self) -> Option<mpsc::UnboundedReceiver<Bytes>> {
        let mut inner = lock(&self.inner);
        if inner.tx.as_ref().is_some_and(|tx| !tx.is_closed()) {
            return None;
        }
        let (tx, rx) = mpsc::unbounded_channel();
        inner.tx = Some(tx);
        inner.done = false;
        Some(rx)
    }

    /// Resolves when the current reader goes away (or immediately if none).
    pub(crate) async fn reader_gone(&self) {
        let tx = lock(&self.inner).tx.clone();
        if let Some(tx) = tx {
            tx.closed().await;
        }
    }
}

/// Parses a `Last-Event-ID` of the form `<stream>-<seq>`.
pub(crate) fn parse_event_id(s: &str) -> Option<(u64, u64)> {
    let (a, b) = s.trim().split_once('-')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// The key of a JSON-RPC id in maps: its compact JSON text (`1` and `"1"` differ).
pub(crate) fn id_key(id: &Value) -> String {
    serde_json::to_string(id).unwrap_or_default()
}
