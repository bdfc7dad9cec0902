//! Shared runtime state behind the layer, and the admin handle over it: kill switches,
//! approvals, observed tool definitions (pins, threat verdicts), reload and events.

use std::{
    collections::{BTreeMap, HashMap, HashSet, VecDeque},
    path::{Path, PathBuf},
    sync::{Arc, Mutex, RwLock},
    time::SystemTime,
};

use arc_swap::ArcSwap;
use mcp_gateway_core::{
    EventBus, FeatureKind, GatewayEvent, ServerMessage, Target, catalog::Catalog,
    message::unix_millis,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::broadcast;

use crate::{
    config::{self, LoadError, PinMode, ThreatAction},
    engine::{Engine, Provisioned},
    pin::{Approval, ApprovalKey, ApprovalStore, Approvals, MemoryStore, StoreError, tool_pin},
    threat::{Approved, Finding, ToolRef, scan_set},
};

/// What a kill switch cuts off.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "scope", rename_all = "snake_case")]
pub enum KillTarget {
    /// Everything.
    Gateway,
    /// A client (by `clientInfo.name`).
    Client {
        /// The client name.
        name: String,
    },
    /// An identity (by subject).
    Identity {
        /// The subject.
        subject: String,
    },
    /// An upstream server.
    Server {
        /// The server.
        server: String,
    },
    /// One tool (by its name on the upstream).
    Tool {
        /// The server.
        server: String,
        /// The tool.
        tool: String,
    },
}

/// A set of (server, name) pairs, looked up by `&str`s without allocating.
#[derive(Debug, Clone, Default)]
pub(crate) struct PairSet(HashMap<String, HashSet<String>>);

impl PairSet {
    pub(crate) fn contains(&self, server: &str, name: &str) -> bool {
        self.0.get(server).is_some_and(|n| n.contains(name))
    }

    pub(crate) fn insert(&mut self, server: String, name: String) {
        self.0.entry(server).or_default().insert(name);
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The active kill switches.
#[derive(Debug, Clone, Default)]
pub(crate) struct Kills {
    pub(crate) any: bool,
    pub(crate) gateway: bool,
    pub(crate) clients: HashSet<String>,
    pub(crate) identities: HashSet<String>,
    pub(crate) servers: HashSet<String>,
    pub(crate) tools: PairSet,
}

impl Kills {
    fn from_set(set: &BTreeMap<KillTarget, ()>) -> Self {
        let mut k = Kills::default();
        for t in set.keys() {
            match t {
                KillTarget::Gateway => k.gateway = true,
                KillTarget::Client { name } => {
                    k.clients.insert(name.clone());
                }
                KillTarget::Identity { subject } => {
                    k.identities.insert(subject.clone());
                }
                KillTarget::Server { server } => {
                    k.servers.insert(server.clone());
                }
                KillTarget::Tool { server, tool } => {
                    k.tools.insert(server.clone(), tool.clone());
                }
            }
        }
        k.any = !set.is_empty();
        k
    }
}

/// Something operators want to hear about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
#[non_exhaustive]
pub enum PolicyEvent {
    /// A newly discovered feature under `allow-selected` waits for approval.
    FeaturePending {
        /// Kind (`tool`, ...).
        kind: String,
        /// Server.
        server: String,
        /// Name or URI on the upstream.
        name: String,
    },
    /// A pinned tool changed: withheld (or, with `pinning.mode = "warn"`, flagged).
    RugPull {
        /// Server.
        server: String,
        /// Tool.
        tool: String,
        /// The approved pin.
        pinned: String,
        /// The pin of what the upstream now sends.
        seen: String,
        /// Whether the tool is withheld.
        withheld: bool,
    },
    /// A tool was withheld because of threat findings.
    ThreatBlocked {
        /// Server.
        server: String,
        /// Tool.
        tool: String,
        /// The findings.
        findings: Vec<Finding>,
    },
    /// A feature was approved (again).
    Approved {
        /// Kind.
        kind: String,
        /// Server.
        server: String,
        /// Name.
        name: String,
        /// The pin approved, for tools seen by the policy.
        pin: Option<String>,
    },
    /// A kill switch was set or lifted.
    KillSwitch {
        /// What.
        target: KillTarget,
        /// Set (true) or lifted.
        active: bool,
    },
    /// A new policy was loaded.
    Reloaded,
}

/// Why a tool seen in a list is not served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    Ok,
    Withheld,
    Blocked,
}

#[derive(Debug, Clone)]
pub(crate) struct Observed {
    pub(crate) def: Value,
    pub(crate) pin: String,
    pub(crate) findings: Vec<Finding>,
    pub(crate) verdict: Verdict,
}

#[derive(Debug, Default)]
pub(crate) struct ToolBook {
    pub(crate) tools: HashMap<(String, String), Observed>,
    pub(crate) announced: HashSet<(FeatureKind, String, String)>,
    pub(crate) rug_announced: HashSet<(String, String, String)>,
}

/// A withheld tool, as the admin sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WithheldTool {
    /// Server.
    pub server: String,
    /// Tool.
    pub tool: String,
    /// `rug_pull` or `threat`.
    pub reason: String,
    /// The pin of the definition now seen.
    pub pin: String,
    /// Threat findings.
    pub findings: Vec<Finding>,
}

pub(crate) struct Shared {
    pub(crate) engine: ArcSwap<Engine>,
    pub(crate) kills: ArcSwap<Kills>,
    kill_set: Mutex<BTreeMap<KillTarget, ()>>,
    pub(crate) approvals: RwLock<BTreeMap<ApprovalKey, Approval>>,
    store: Arc<dyn ApprovalStore>,
    pub(crate) book: Mutex<ToolBook>,
    /// (server, tool) of tools not to serve; read lock-free on every call.
    pub(crate) withheld: ArcSwap<PairSet>,
    /// Renamed name -> the exposed name the route layer knows.
    pub(crate) renamed: ArcSwap<HashMap<String, String>>,
    events: broadcast::Sender<PolicyEvent>,
    /// The last [`RECENT_EVENTS`] events, for the admin endpoint.
    recent: Mutex<VecDeque<RecordedEvent>>,
    bus: RwLock<Option<EventBus>>,
    file: Option<PathBuf>,
}

/// How many events [`PolicyHandle::recent_events`] keeps.
pub const RECENT_EVENTS: usize = 256;

/// A policy event with the time it was raised.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedEvent {
    /// When, in milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// The event.
    #[serde(flatten)]
    pub event: PolicyEvent,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyState").finish_non_exhaustive()
    }
}

fn now_ms() -> u64 {
    unix_millis(SystemTime::now())
}

impl Shared {
    pub(crate) fn new(
        engine: Engine,
        store: Arc<dyn ApprovalStore>,
        file: Option<PathBuf>,
    ) -> Result<Self, StoreError> {
        let approvals = store.load()?.index();
        Ok(Self {
            engine: ArcSwap::from_pointee(engine),
            kills: ArcSwap::from_pointee(Kills::default()),
            kill_set: Mutex::new(BTreeMap::new()),
            approvals: RwLock::new(approvals),
            store,
            book: Mutex::new(ToolBook::default()),
            withheld: ArcSwap::from_pointee(PairSet::default()),
            renamed: ArcSwap::from_pointee(HashMap::new()),
            events: broadcast::channel(256).0,
            recent: Mutex::new(VecDeque::new()),
            bus: RwLock::new(None),
            file,
        })
    }

    pub(crate) fn emit(&self, e: PolicyEvent) {
        tracing::info!(target: "mcp_policy", event = ?e, "policy event");
        if let Ok(mut recent) = self.recent.lock() {
            if recent.len() == RECENT_EVENTS {
                recent.pop_front();
            }
            recent.push_back(RecordedEvent {
                at_ms: now_ms(),
                event: e.clone(),
            });
        }
        let _ = self.events.send(e);
    }

    fn list_changed(&self, kind: FeatureKind) {
        let method = match kind {
            FeatureKind::Tool => "notifications/tools/list_changed",
            FeatureKind::Prompt => "notifications/prompts/list_changed",
            FeatureKind::Resource | FeatureKind::ResourceTemplate => {
                "notifications/resources/list_changed"
            }
        };
        if let Ok(bus) = self.bus.read()
            && let Some(bus) = bus.as_ref()
        {
            bus.publish(GatewayEvent::ListChanged(ServerMessage {
                server: None,
                method: method.into(),
                params: Default::default(),
            }));
        }
    }

    pub(crate) fn is_approved(&self, kind: FeatureKind, server: &str, name: &str) -> bool {
        self.approvals
            .read()
            .map(|a| {
                a.get(&(kind, server.to_string(), name.to_string()))
                    .is_some_and(provisions)
            })
            .unwrap_or(false)
    }

    fn save(&self) {
        let snapshot = match self.approvals.read() {
            Ok(a) => Approvals::from_index(&a),
            Err(_) => return,
        };
        if let Err(e) = self.store.save(&snapshot) {
            tracing::error!(target: "mcp_policy", error = %e, "cannot save approvals");
        }
    }

    /// Announces a pending feature once.
    pub(crate) fn pending(&self, kind: FeatureKind, server: &str, name: &str) {
        let fresh = self
            .book
            .lock()
            .map(|mut b| {
                b.announced
                    .insert((kind, server.to_string(), name.to_string()))
            })
            .unwrap_or(false);
        if fresh {
            self.emit(PolicyEvent::FeaturePending {
                kind: kind.as_str().into(),
                server: server.into(),
                name: name.into(),
            });
        }
    }

    /// Observes tool definitions (from a list answer or the catalog): pins, threat checks,
    /// verdicts. Judges again (the whole set: mimicry and shadowing compare across servers) only
    /// when a definition changed since it was last seen.
    pub(crate) fn observe_tools<'a>(
        &self,
        engine: &Engine,
        entries: impl IntoIterator<Item = (&'a Target, &'a Value)>,
    ) {
        let Ok(mut book) = self.book.lock() else {
            return;
        };
        let mut changed = false;
        for (o, t) in entries {
            let name = o.name.as_deref().unwrap_or_default();
            let key = (o.server.to_string(), name.to_string());
            if book.tools.get(&key).is_some_and(|obs| obs.def == *t) {
                continue;
            }
            changed = true;
            book.tools.insert(
                key,
                Observed {
                    def: t.clone(),
                    pin: tool_pin(t),
                    findings: Vec::new(),
                    verdict: Verdict::Ok,
                },
            );
        }
        if changed {
            self.judge(engine, &mut book);
        }
    }

    /// Recomputes the verdicts of every observed tool.
    fn judge(&self, engine: &Engine, book: &mut ToolBook) {
        let keys: Vec<(String, String)> = book.tools.keys().cloned().collect();
        let approvals = match self.approvals.read() {
            Ok(a) => a.clone(),
            Err(_) => return,
        };
        let mut approved = Approved::default();
        for ((kind, server, name), a) in &approvals {
            if *kind == FeatureKind::Tool && a.by.as_deref() == Some("admin") {
                approved.servers.insert(server.clone());
                approved.tools.insert((server.clone(), name.clone()));
            }
        }
        let findings = if engine.threats.enabled {
            let refs: Vec<ToolRef<'_>> = keys
                .iter()
                .filter_map(|k| {
                    book.tools.get(k).map(|o| ToolRef {
                        server: &k.0,
                        def: &o.def,
                    })
                })
                .collect();
            scan_set(&refs, &approved)
        } else {
            vec![Vec::new(); keys.len()]
        };
        let mut new_pins = Vec::new();
        let mut events = Vec::new();
        let present: Vec<&(String, String)> = keys
            .iter()
            .filter(|k| book.tools.contains_key(*k))
            .collect();
        for (k, f) in present.into_iter().zip(findings) {
            let Some(obs) = book.tools.get_mut(k) else {
                continue;
            };
            let akey = (FeatureKind::Tool, k.0.clone(), k.1.clone());
            let approval = approvals.get(&akey);
            let admin_ok = approval.is_some_and(|a| {
                a.by.as_deref() == Some("admin") && a.pin.as_deref() == Some(&obs.pin)
            });
            let provisioned = engine.provisioned(
                FeatureKind::Tool,
                &k.0,
                &k.1,
                approval.is_some_and(provisions),
            ) == Provisioned::Yes;
            let mut verdict = Verdict::Ok;
            if engine.pinning != PinMode::Off && provisioned {
                match approval.and_then(|a| a.pin.clone()) {
                    Some(p) if p != obs.pin => {
                        let withheld = engine.pinning == PinMode::Enforce;
                        if withheld {
                            verdict = Verdict::Withheld;
                        }
                        if book_rug(&mut book.rug_announced, k, &obs.pin) {
                            events.push(PolicyEvent::RugPull {
                                server: k.0.clone(),
                                tool: k.1.clone(),
                                pinned: p,
                                seen: obs.pin.clone(),
                                withheld,
                            });
                        }
                    }
                    Some(_) => {}
                    None => new_pins.push((
                        akey.clone(),
                        obs.pin.clone(),
                        approval.and_then(|a| a.by.clone()),
                    )),
                }
            }
            let blocking: Vec<Finding> = f
                .iter()
                .filter(|x| engine.threats.action(x.severity) == ThreatAction::Block)
                .cloned()
                .collect();
            if !blocking.is_empty() && !admin_ok && verdict == Verdict::Ok {
                verdict = Verdict::Blocked;
                if obs.verdict != Verdict::Blocked {
                    events.push(PolicyEvent::ThreatBlocked {
                        server: k.0.clone(),
                        tool: k.1.clone(),
                        findings: blocking,
                    });
                }
            }
            obs.findings = f;
            obs.verdict = verdict;
        }
        if !new_pins.is_empty() {
            // Trust on first use: a provisioned tool's first definition becomes its pin.
            if let Ok(mut a) = self.approvals.write() {
                for (key, pin, by) in new_pins {
                    a.insert(
                        key.clone(),
                        Approval {
                            server: key.1,
                            kind: key.0.as_str().into(),
                            name: key.2,
                            pin: Some(pin),
                            by: by.or_else(|| Some("tofu".into())),
                            at_ms: now_ms(),
                        },
                    );
                }
            }
            self.save();
        }
        let mut withheld = PairSet::default();
        for (k, _) in book.tools.iter().filter(|(_, o)| o.verdict != Verdict::Ok) {
            withheld.insert(k.0.clone(), k.1.clone());
        }
        self.withheld.store(Arc::new(withheld));
        for e in events {
            self.emit(e);
        }
    }

    pub(crate) fn learn_renames(&self, pairs: Vec<(String, String)>) {
        let cur = self.renamed.load();
        if pairs.iter().all(|(r, e)| cur.get(r) == Some(e)) {
            return;
        }
        let mut next = (**cur).clone();
        next.extend(pairs);
        self.renamed.store(Arc::new(next));
    }
}

/// Whether an approval provisions its feature: trust-on-first-use pins only record what was
/// seen; they never provision anything the configuration does not.
fn provisions(a: &Approval) -> bool {
    a.by.as_deref() != Some("tofu")
}

fn book_rug(set: &mut HashSet<(String, String, String)>, k: &(String, String), pin: &str) -> bool {
    set.insert((k.0.clone(), k.1.clone(), pin.to_string()))
}

// === PolicyHandle ===

/// The admin handle: kill switches, approvals, reload and events. Cheap to clone; every clone and
/// every layer built from it share one state, so changes apply to the next message of every
/// session.
#[derive(Clone, Debug)]
pub struct PolicyHandle {
    pub(crate) shared: Arc<Shared>,
}

/// Errors of admin operations.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The policy is invalid.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// The approvals store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Reload without a policy file.
    #[error("this policy was not loaded from a file")]
    NoFile,
}

impl PolicyHandle {
    /// A handle over a compiled engine, approvals in memory.
    pub fn new(engine: Engine) -> Self {
        Self::with_store(engine, Arc::new(MemoryStore::default())).unwrap_or_else(|_| Self {
            shared: Arc::new(Shared {
                engine: ArcSwap::from_pointee(Engine::empty()),
                kills: ArcSwap::from_pointee(Kills::default()),
                kill_set: Mutex::new(BTreeMap::new()),
                approvals: RwLock::new(BTreeMap::new()),
                store: Arc::new(MemoryStore::default()),
                book: Mutex::new(ToolBook::default()),
                withheld: ArcSwap::from_pointee(PairSet::default()),
                renamed: ArcSwap::from_pointee(HashMap::new()),
                events: broadcast::channel(256).0,
                recent: Mutex::new(VecDeque::new()),
                bus: RwLock::new(None),
                file: None,
            }),
        })
    }

    /// A handle over a compiled engine and an approvals store (loaded now).
    pub fn with_store(engine: Engine, store: Arc<dyn ApprovalStore>) -> Result<Self, StoreError> {
        Ok(Self {
            shared: Arc::new(Shared::new(engine, store, None)?),
        })
    }

    /// Builds from the gateway TOML's `[policy]` section. `source` is the gateway TOML text (for
    /// line numbers of inline errors).
    pub fn from_config(config: &config::Config, source: Option<&str>) -> Result<Self, AdminError> {
        let (doc, text) = config.load_document(source)?;
        let engine = match &text {
            Some(t) => config::compile(&doc, Some(t), &[], config.file.clone())?,
            None => config::compile(&doc, source, &["policy"], None)?,
        };
        let store: Arc<dyn ApprovalStore> = match &config.approvals {
            Some(p) => Arc::new(crate::pin::FileStore::new(p)),
            None => Arc::new(MemoryStore::default()),
        };
        Ok(Self {
            shared: Arc::new(Shared::new(engine, store, config.file.clone())?),
        })
    }

    /// Publishes `list_changed` notifications on the gateway's bus when approvals or kill
    /// switches change what clients may see.
    pub fn attach_bus(&self, bus: EventBus) {
        if let Ok(mut b) = self.shared.bus.write() {
            *b = Some(bus);
        }
    }

    /// Subscribes to policy events.
    pub fn subscribe(&self) -> broadcast::Receiver<PolicyEvent> {
        self.shared.events.subscribe()
    }

    /// The last [`RECENT_EVENTS`] events, oldest first.
    pub fn recent_events(&self) -> Vec<RecordedEvent> {
        self.shared
            .recent
            .lock()
            .map(|r| r.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Observes the gateway catalog's tools now and whenever `bus` says the tool list changed
    /// (the catalog refreshes when an upstream sends `notifications/tools/list_changed`), so a
    /// changed pinned tool is withheld, and its event raised, before any client lists it again.
    /// Without this, definitions are observed on `tools/list` answers only. The task ends when
    /// the bus closes. Must be called inside a tokio runtime.
    pub fn watch_catalog(&self, catalog: Catalog, bus: &EventBus) -> tokio::task::JoinHandle<()> {
        let mut rx = bus.subscribe();
        let shared = self.shared.clone();
        let observe = move |shared: &Shared| {
            let snapshot = catalog.snapshot();
            let tools = &snapshot.tools;
            if !tools.items.is_empty() {
                let engine = shared.engine.load_full();
                shared.observe_tools(&engine, tools.origins.iter().zip(&tools.items));
            }
        };
        observe(&shared);
        tokio::spawn(async move {
            loop {
                match rx.recv().await {
                    Ok(GatewayEvent::ListChanged(m))
                        if m.method == "notifications/tools/list_changed" && m.server.is_none() =>
                    {
                        observe(&shared);
                    }
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(_)) => observe(&shared),
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        })
    }

    /// The current engine.
    pub fn engine(&self) -> Arc<Engine> {
        self.shared.engine.load_full()
    }

    /// Sets a kill switch; effective on the next message.
    pub fn kill(&self, target: KillTarget) {
        self.set_kill(target, true);
    }

    /// Lifts a kill switch.
    pub fn lift(&self, target: KillTarget) {
        self.set_kill(target, false);
    }

    fn set_kill(&self, target: KillTarget, on: bool) {
        if let Ok(mut set) = self.shared.kill_set.lock() {
            if on {
                set.insert(target.clone(), ());
            } else {
                set.remove(&target);
            }
            self.shared.kills.store(Arc::new(Kills::from_set(&set)));
        }
        self.shared
            .emit(PolicyEvent::KillSwitch { target, active: on });
        self.shared.list_changed(FeatureKind::Tool);
    }

    /// The active kill switches.
    pub fn kill_switches(&self) -> Vec<KillTarget> {
        self.shared
            .kill_set
            .lock()
            .map(|s| s.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Approves a feature (again). For a tool the policy has seen, the pin becomes its current
    /// definition's, which also lifts a rug-pull or threat hold.
    pub fn approve(
        &self,
        kind: FeatureKind,
        server: &str,
        name: &str,
    ) -> Result<Option<String>, StoreError> {
        let pin = if kind == FeatureKind::Tool {
            self.shared.book.lock().ok().and_then(|b| {
                b.tools
                    .get(&(server.to_string(), name.to_string()))
                    .map(|o| o.pin.clone())
            })
        } else {
            None
        };
        let snapshot = {
            let Ok(mut a) = self.shared.approvals.write() else {
                return Ok(pin);
            };
            a.insert(
                (kind, server.to_string(), name.to_string()),
                Approval {
                    server: server.into(),
                    kind: kind.as_str().into(),
                    name: name.into(),
                    pin: pin.clone(),
                    by: Some("admin".into()),
                    at_ms: now_ms(),
                },
            );
            Approvals::from_index(&a)
        };
        self.shared.store.save(&snapshot)?;
        if let Ok(mut b) = self.shared.book.lock() {
            b.announced
                .remove(&(kind, server.to_string(), name.to_string()));
            let engine = self.shared.engine.load_full();
            self.shared.judge(&engine, &mut b);
        }
        self.shared.emit(PolicyEvent::Approved {
            kind: kind.as_str().into(),
            server: server.into(),
            name: name.into(),
            pin: pin.clone(),
        });
        self.shared.list_changed(kind);
        Ok(pin)
    }

    /// Removes an approval.
    pub fn revoke(&self, kind: FeatureKind, server: &str, name: &str) -> Result<bool, StoreError> {
        let (removed, snapshot) = {
            let Ok(mut a) = self.shared.approvals.write() else {
                return Ok(false);
            };
            let removed = a
                .remove(&(kind, server.to_string(), name.to_string()))
                .is_some();
            (removed, Approvals::from_index(&a))
        };
        self.shared.store.save(&snapshot)?;
        if let Ok(mut b) = self.shared.book.lock() {
            let engine = self.shared.engine.load_full();
            self.shared.judge(&engine, &mut b);
        }
        self.shared.list_changed(kind);
        Ok(removed)
    }

    /// All approvals.
    pub fn approvals(&self) -> Approvals {
        self.shared
            .approvals
            .read()
            .map(|a| Approvals::from_index(&a))
            .unwrap_or_default()
    }

    /// Features waiting for approval (announced by a list and not approved since).
    pub fn pending(&self) -> Vec<(FeatureKind, String, String)> {
        self.shared
            .book
            .lock()
            .map(|b| b.announced.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Tools withheld because of a rug pull or threat findings.
    pub fn withheld(&self) -> Vec<WithheldTool> {
        let Ok(b) = self.shared.book.lock() else {
            return Vec::new();
        };
        let mut out: Vec<WithheldTool> = b
            .tools
            .iter()
            .filter(|(_, o)| o.verdict != Verdict::Ok)
            .map(|(k, o)| WithheldTool {
                server: k.0.clone(),
                tool: k.1.clone(),
                reason: if o.verdict == Verdict::Withheld {
                    "rug_pull"
                } else {
                    "threat"
                }
                .into(),
                pin: o.pin.clone(),
                findings: o.findings.clone(),
            })
            .collect();
        out.sort_by(|a, b| (&a.server, &a.tool).cmp(&(&b.server, &b.tool)));
        out
    }

    /// Replaces the policy with `text` (a policy file's content): all or nothing.
    pub fn reload_str(&self, text: &str, file: Option<&Path>) -> Result<(), LoadError> {
        let doc = config::parse_document(text, file)?;
        let engine = config::compile(&doc, Some(text), &[], file.map(Path::to_path_buf))?;
        self.install(engine);
        Ok(())
    }

    /// Re-reads the policy file this handle was built from: all or nothing.
    pub fn reload(&self) -> Result<(), AdminError> {
        let Some(path) = self.shared.file.clone() else {
            return Err(AdminError::NoFile);
        };
        let text = std::fs::read_to_string(&path).map_err(|e| {
            AdminError::Load(LoadError {
                problems: vec![config::Problem {
                    file: Some(path.clone()),
                    line: None,
                    column: None,
                    path: String::new(),
                    message: format!("cannot read policy file: {e}"),
                }],
            })
        })?;
        self.reload_str(&text, Some(&path))?;
        Ok(())
    }

    /// Installs a compiled engine (sessions are untouched; the next message sees it).
    pub fn install(&self, engine: Engine) {
        self.shared.engine.store(Arc::new(engine));
        if let Ok(mut b) = self.shared.book.lock() {
            let engine = self.shared.engine.load_full();
            self.shared.judge(&engine, &mut b);
        }
        self.shared.emit(PolicyEvent::Reloaded);
        self.shared.list_changed(FeatureKind::Tool);
    }
}
