//! The requests in flight to one upstream, so reverse-path messages find their downstream.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use rmcp::{
    model::{CancelledNotification, CancelledNotificationParam, ProgressToken, RequestId},
    service::{Peer, RoleClient},
};
use serde_json::Value;

use crate::{downstream::Downstream, message::RequestContext};

/// What a reverse-path message needs to know about the request that caused it.
#[derive(Clone)]
pub(crate) struct Origin {
    pub(crate) downstream: Option<Arc<dyn Downstream>>,
    /// The progress token the client asked for (`None`: the client wants no progress).
    pub(crate) client_token: Option<Value>,
    /// The progress delivered to the client so far.
    pub(crate) progress: Arc<Progress>,
}

/// The last progress delivered for one request, so its result can wait for the progress that is
/// still on its way (rmcp hands every notification to its own task but completes responses
/// inline, so the last notifications can trail the result).
#[derive(Default)]
pub(crate) struct Progress {
    last: Mutex<Option<(f64, Option<f64>)>>,
    changed: tokio::sync::Notify,
}

impl Progress {
    /// Records a delivered progress notification.
    pub(crate) fn delivered(&self, progress: f64, total: Option<f64>) {
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) = Some((progress, total));
        self.changed.notify_waiters();
    }

    /// Waits (at most `limit`) until the progress reported so far reached its announced total.
    pub(crate) async fn settle(&self, limit: std::time::Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let notified = self.changed.notified();
            let pending = match *self.last.lock().unwrap_or_else(|e| e.into_inner()) {
                Some((p, Some(total))) => p < total,
                _ => false,
            };
            if !pending || tokio::time::timeout_at(deadline, notified).await.is_err() {
                return;
            }
        }
    }
}

struct Entry {
    origin: Origin,
    upstream_id: Option<RequestId>,
    token: Option<ProgressToken>,
}

#[derive(Default)]
struct Table {
    next: u64,
    entries: HashMap<u64, Entry>,
    by_id: HashMap<RequestId, u64>,
    by_token: HashMap<ProgressToken, u64>,
}

/// The in-flight table of one upstream.
#[derive(Default, Clone)]
pub(crate) struct Inflight(Arc<Mutex<Table>>);

impl Inflight {
    /// Registers a request about to be sent.
    pub(crate) fn register(&self, ctx: &RequestContext, peer: Peer<RoleClient>) -> Guard {
        let origin = Origin {
            downstream: ctx.downstream.clone(),
            client_token: ctx_progress_token(ctx),
            progress: Arc::default(),
        };
        let progress = origin.progress.clone();
        let mut t = self.lock();
        t.next += 1;
        let key = t.next;
        t.entries.insert(
            key,
            Entry {
                origin,
                upstream_id: None,
                token: None,
            },
        );
        let wants_progress = t
            .entries
            .get(&key)
            .is_some_and(|e| e.origin.client_token.is_some());
        Guard {
            table: self.clone(),
            key,
            peer: Some(peer),
            done: false,
            wants_progress,
            progress,
        }
    }

    /// The origin of the request the upstream knows by `id`; falls back to the most recent
    /// request in flight when the id is unknown or absent (stdio upstreams cannot say).
    pub(crate) fn origin(&self, id: Option<&RequestId>) -> Option<Origin> {
        let t = self.lock();
        if let Some(key) = id.and_then(|id| t.by_id.get(id)) {
            return t.entries.get(key).map(|e| e.origin.clone());
        }
        t.entries
            .iter()
            .filter(|(_, e)| e.origin.downstream.is_some())
            .max_by_key(|(k, _)| **k)
            .map(|(_, e)| e.origin.clone())
    }

    /// The origin of the request that an upstream progress token belongs to.
    pub(crate) fn by_token(&self, token: &ProgressToken) -> Option<Origin> {
        let t = self.lock();
        t.by_token
            .get(token)
            .and_then(|k| t.entries.get(k))
            .map(|e| e.origin.clone())
    }

    /// Forgets every request (the connection is gone; their futures fail on their own).
    pub(crate) fn fail_all(&self) {
        let mut t = self.lock();
        t.entries.clear();
        t.by_id.clear();
        t.by_token.clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn ctx_progress_token(ctx: &RequestContext) -> Option<Value> {
    ctx.extensions
        .get::<ClientProgressToken>()
        .map(|t| t.0.clone())
}

/// Put into the context by dispatch: the progress token the client sent with the request.
#[derive(Clone, Debug)]
pub(crate) struct ClientProgressToken(pub(crate) Value);

/// Removes the entry when the request ends; cancels it upstream when dropped unfinished (the
/// client went away or cancelled).
pub(crate) struct Guard {
    table: Inflight,
    key: u64,
    peer: Option<Peer<RoleClient>>,
    done: bool,
    wants_progress: bool,
    progress: Arc<Progress>,
}

impl Guard {
    pub(crate) fn bind(&mut self, id: RequestId, token: ProgressToken) {
        let mut t = self.table.lock();
        if let Some(e) = t.entries.get_mut(&self.key) {
            e.upstream_id = Some(id.clone());
            e.token = Some(token.clone());
            t.by_id.insert(id, self.key);
            t.by_token.insert(token, self.key);
        }
    }

    pub(crate) fn finish(&mut self) {
        self.done = true;
    }

    /// Whether the client asked for progress on this request.
    pub(crate) fn wants_progress(&self) -> bool {
        self.wants_progress
    }

    /// The progress delivered for this request.
    pub(crate) fn progress(&self) -> &Progress {
        &self.progress
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let removed = {
            let mut t = self.table.lock();
            let e = t.entries.remove(&self.key);
            if let Some(e) = &e {
                if let Some(id) = &e.upstream_id {
                    t.by_id.remove(id);
                }
                if let Some(token) = &e.token {
                    t.by_token.remove(token);
                }
            }
            e
        };
        if !self.done
            && let (
                Some(peer),
                Some(Entry {
                    upstream_id: Some(id),
                    ..
                }),
            ) = (self.peer.take(), removed)
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            rt.spawn(async move {
                let notification = CancelledNotification::new(CancelledNotificationParam::new(
                    Some(id),
                    Some("the client cancelled the request".into()),
                ));
                let _ = peer.send_notification(notification.into()).await;
            });
        }
    }
}
