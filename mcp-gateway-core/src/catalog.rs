//! The merged, namespaced catalog of every upstream's tools, prompts, resources and templates.
//!
//! Each upstream's lists are fetched when it connects and again whenever it says a list changed;
//! the catalog merges them into one view in configuration order and answers `*/list` from memory
//! (no upstream round trip per list call). When the merged view changes, it publishes the matching
//! `notifications/*/list_changed` on the [`EventBus`].
//!
//! ## Names
//! With [`PrefixMode::Always`] (the default) a feature `echo` of server `everything` is exposed as
//! `everything__echo`; the server name is validated so the split is unambiguous, and adding a
//! server never renames another server's features. Resource URIs are rewritten reversibly by
//! prefixing the server to the scheme: `test://static` becomes `everything+test://static` (and a
//! template `test://t/{id}` becomes `everything+test://t/{id}`, so expansions map back too).
//! With [`PrefixMode::Never`] names and URIs pass through unchanged; when two servers offer the same
//! name, the first in configuration order wins and the clash is logged.
//!
//! A server that is down keeps its last known features listed (clients see a stable list); calls
//! to them get a clear `upstream unavailable` error until it is back.

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
};

use serde_json::Value;

use crate::{
    downstream::ServerMessage,
    events::{EventBus, GatewayEvent},
    message::{FeatureKind, JsonObject, Target},
};

/// Whether exposed names carry their server's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PrefixMode {
    /// `<server><separator><name>` for tools and prompts, `<server>+<uri>` for resources.
    #[default]
    Always,
    /// Names and URIs pass through unchanged (for a single upstream).
    Never,
}

/// How features are named towards clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Naming {
    /// Between server and feature name (`__` by default).
    pub separator: String,
    /// Whether to prefix at all.
    pub mode: PrefixMode,
}

impl Default for Naming {
    fn default() -> Self {
        Self {
            separator: "__".into(),
            mode: PrefixMode::Always,
        }
    }
}

impl Naming {
    /// Whether a server name can be used with this naming (non-empty, ASCII letters, digits and
    /// `-`, starting with a letter, not containing the separator), so exposed names split back
    /// unambiguously.
    pub fn check_server_name(&self, name: &str) -> Result<(), String> {
        let ok_chars = name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
        if name.is_empty() || !name.starts_with(|c: char| c.is_ascii_alphabetic()) || !ok_chars {
            return Err(format!(
                "server name '{name}' must start with a letter and use only ASCII letters, digits and '-'"
            ));
        }
        if !self.separator.is_empty() && name.contains(self.separator.as_str()) {
            return Err(format!(
                "server name '{name}' must not contain the separator '{}'",
                self.separator
            ));
        }
        Ok(())
    }

    /// The client-facing name of a tool or prompt.
    pub fn expose(&self, server: &str, name: &str) -> String {
        match self.mode {
            PrefixMode::Always => format!("{server}{}{name}", self.separator),
            PrefixMode::Never => name.to_owned(),
        }
    }

    /// The client-facing form of a resource URI or URI template.
    pub fn expose_uri(&self, server: &str, uri: &str) -> String {
        match self.mode {
            PrefixMode::Always => format!("{server}+{uri}"),
            PrefixMode::Never => uri.to_owned(),
        }
    }

    /// Splits a prefixed name into server and original name (only for [`PrefixMode::Always`]).
    pub fn split<'a>(&self, exposed: &'a str) -> Option<(&'a str, &'a str)> {
        match self.mode {
            PrefixMode::Always => exposed.split_once(self.separator.as_str()),
            PrefixMode::Never => None,
        }
    }

    /// Splits a prefixed URI into server and original URI (only for [`PrefixMode::Always`]).
    pub fn split_uri<'a>(&self, exposed: &'a str) -> Option<(&'a str, &'a str)> {
        match self.mode {
            PrefixMode::Always => {
                let (server, rest) = exposed.split_once('+')?;
                // The server part never holds URI punctuation; a '+' inside a scheme like
                // `git+ssh:` with no server in front is not ours.
                (!server.contains([':', '/'])).then_some((server, rest))
            }
            PrefixMode::Never => None,
        }
    }
}

// === lists ===

/// The features of one kind, merged across servers.
#[derive(Debug, Default, Clone)]
pub struct MergedList {
    /// The entries as clients see them (names and URIs exposed).
    pub items: Vec<Value>,
    /// Where each entry came from (same order as `items`).
    pub origins: Arc<Vec<Target>>,
    index: HashMap<String, usize>,
}

impl MergedList {
    /// Finds an entry by its exposed name (or URI).
    pub fn get(&self, exposed: &str) -> Option<&Target> {
        self.index.get(exposed).and_then(|i| self.origins.get(*i))
    }
}

/// What one server offers.
#[derive(Debug, Default, Clone)]
pub struct ServerLists {
    /// Raw `tools` entries.
    pub tools: Vec<Value>,
    /// Raw `prompts` entries.
    pub prompts: Vec<Value>,
    /// Raw `resources` entries.
    pub resources: Vec<Value>,
    /// Raw `resourceTemplates` entries.
    pub templates: Vec<Value>,
}

impl ServerLists {
    fn of(&self, kind: FeatureKind) -> &[Value] {
        match kind {
            FeatureKind::Tool => &self.tools,
            FeatureKind::Prompt => &self.prompts,
            FeatureKind::Resource => &self.resources,
            FeatureKind::ResourceTemplate => &self.templates,
        }
    }
}

/// An immutable view of the catalog.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Merged tools.
    pub tools: MergedList,
    /// Merged prompts.
    pub prompts: MergedList,
    /// Merged resources.
    pub resources: MergedList,
    /// Merged resource templates.
    pub templates: MergedList,
    servers: Vec<(Arc<str>, Arc<ServerLists>)>,
}

impl Snapshot {
    /// The merged list of a kind.
    pub fn list(&self, kind: FeatureKind) -> &MergedList {
        match kind {
            FeatureKind::Tool => &self.tools,
            FeatureKind::Prompt => &self.prompts,
            FeatureKind::Resource => &self.resources,
            FeatureKind::ResourceTemplate => &self.templates,
        }
    }

    /// What one server offers, if it has been listed.
    pub fn server(&self, server: &str) -> Option<&ServerLists> {
        self.servers
            .iter()
            .find(|(s, _)| &**s == server)
            .map(|(_, l)| &**l)
    }
}

/// The list key and the name field of each kind.
pub(crate) fn list_key(kind: FeatureKind) -> (&'static str, &'static str) {
    match kind {
        FeatureKind::Tool => ("tools", "name"),
        FeatureKind::Prompt => ("prompts", "name"),
        FeatureKind::Resource => ("resources", "uri"),
        FeatureKind::ResourceTemplate => ("resourceTemplates", "uriTemplate"),
    }
}

const KINDS: [FeatureKind; 4] = [
    FeatureKind::Tool,
    FeatureKind::Prompt,
    FeatureKind::Resource,
    FeatureKind::ResourceTemplate,
];

// === Catalog ===

/// The merged catalog. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Catalog {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    naming: Naming,
    /// Server names in configuration order.
    order: Vec<Arc<str>>,
    snapshot: RwLock<Arc<Snapshot>>,
    events: EventBus,
}

impl Catalog {
    /// An empty catalog for servers in this order.
    pub fn new(naming: Naming, order: Vec<Arc<str>>, events: EventBus) -> Self {
        Self {
            inner: Arc::new(Inner {
                naming,
                order,
                snapshot: RwLock::new(Arc::default()),
                events,
            }),
        }
    }

    /// The naming rules.
    pub fn naming(&self) -> &Naming {
        &self.inner.naming
    }

    /// The current view.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.inner
            .snapshot
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Replaces one server's lists, rebuilds the merged view and announces what changed.
    pub fn update(&self, server: &Arc<str>, lists: ServerLists) {
        let changed = {
            let mut guard = self
                .inner
                .snapshot
                .write()
                .unwrap_or_else(|e| e.into_inner());
            let mut servers: Vec<(Arc<str>, Arc<ServerLists>)> = guard
                .servers
                .iter()
                .filter(|(s, _)| s != server)
                .cloned()
                .collect();
            servers.push((server.clone(), Arc::new(lists)));
            let order = &self.inner.order;
            servers.sort_by_key(|(s, _)| order.iter().position(|o| o == s).unwrap_or(usize::MAX));
            let next = self.build(servers);
            let changed: Vec<FeatureKind> = KINDS
                .into_iter()
                .filter(|k| guard.list(*k).items != next.list(*k).items)
                .collect();
            *guard = Arc::new(next);
            changed
        };
        let mut announced_resources = false;
        for kind in changed {
            let method = match kind {
                FeatureKind::Tool => "notifications/tools/list_changed",
                FeatureKind::Prompt => "notifications/prompts/list_changed",
                FeatureKind::Resource | FeatureKind::ResourceTemplate => {
                    if announced_resources {
                        continue;
                    }
                    announced_resources = true;
                    "notifications/resources/list_changed"
                }
            };
            self.inner
                .events
                .publish(GatewayEvent::ListChanged(ServerMessage {
                    server: None,
                    method: method.into(),
                    params: JsonObject::new(),
                }));
        }
    }

    fn build(&self, servers: Vec<(Arc<str>, Arc<ServerLists>)>) -> Snapshot {
        let naming = &self.inner.naming;
        let mut snapshot = Snapshot::default();
        for kind in KINDS {
            let (_, field) = list_key(kind);
            let is_uri = matches!(kind, FeatureKind::Resource | FeatureKind::ResourceTemplate);
            let mut merged = MergedList::default();
            let mut origins = Vec::new();
            for (server, lists) in &servers {
                for item in lists.of(kind) {
                    let Some(original) = item.get(field).and_then(Value::as_str) else {
                        continue;
                    };
                    let exposed = if is_uri {
                        naming.expose_uri(server, original)
                    } else {
                        naming.expose(server, original)
                    };
                    if merged.index.contains_key(&exposed) {
                        tracing::warn!(
                            server = %server, name = %exposed,
                            "{} '{exposed}' is offered by more than one server; the first one in the configuration wins",
                            kind.as_str()
                        );
                        continue;
                    }
                    let mut item = item.clone();
                    if let Some(obj) = item.as_object_mut() {
                        obj.insert(field.into(), Value::String(exposed.clone()));
                    }
                    merged.index.insert(exposed.clone(), merged.items.len());
                    merged.items.push(item);
                    origins.push(Target {
                        server: server.clone(),
                        name: Some(original.to_owned()),
                        exposed_name: Some(exposed),
                        instance: None,
                    });
                }
            }
            merged.origins = Arc::new(origins);
            match kind {
                FeatureKind::Tool => snapshot.tools = merged,
                FeatureKind::Prompt => snapshot.prompts = merged,
                FeatureKind::Resource => snapshot.resources = merged,
                FeatureKind::ResourceTemplate => snapshot.templates = merged,
            }
        }
        snapshot.servers = servers;
        snapshot
    }

    /// Resolves a client-facing tool or prompt name.
    pub fn resolve_name(&self, kind: FeatureKind, exposed: &str) -> Option<Target> {
        let snapshot = self.snapshot();
        if let Some(t) = snapshot.list(kind).get(exposed) {
            return Some(t.clone());
        }
        // A prefixed name of a known server whose list has not arrived yet: route it anyway so
        // the upstream gives the authoritative answer. Once the server's list is known, a name
        // not in it does not exist (and is answered like any missing feature, the same answer a
        // feature hidden by policy gets).
        let (server, name) = self.naming().split(exposed)?;
        let server = self.inner.order.iter().find(|s| &***s == server)?;
        if snapshot.server(server).is_some() {
            return None;
        }
        Some(Target {
            server: server.clone(),
            name: Some(name.to_owned()),
            exposed_name: Some(exposed.to_owned()),
            instance: None,
        })
    }

    /// Resolves a client-facing resource URI (listed, or an expansion of a template).
    pub fn resolve_uri(&self, exposed: &str) -> Option<Target> {
        let target = |server: &Arc<str>, uri: &str| Target {
            server: server.clone(),
            name: Some(uri.to_owned()),
            exposed_name: Some(exposed.to_owned()),
            instance: None,
        };
        if let Some((server, uri)) = self.naming().split_uri(exposed) {
            let server = self.inner.order.iter().find(|s| &***s == server)?;
            return Some(target(server, uri));
        }
        if self.naming().mode == PrefixMode::Always {
            return None;
        }
        let snapshot = self.snapshot();
        if let Some(t) = snapshot.resources.get(exposed) {
            return Some(t.clone());
        }
        for (item, origin) in snapshot
            .templates
            .items
            .iter()
            .zip(snapshot.templates.origins.iter())
        {
            if let Some(template) = item.get("uriTemplate").and_then(Value::as_str)
                && template_matches(template, exposed)
            {
                return Some(target(&origin.server, exposed));
            }
        }
        // One upstream: it is the authority on its own URIs.
        match self.inner.order.as_slice() {
            [only] => Some(target(only, exposed)),
            _ => None,
        }
    }

    /// Server names in configuration order.
    pub fn servers(&self) -> &[Arc<str>] {
        &self.inner.order
    }
}

/// Whether a URI is an expansion of a simple RFC 6570 template (`{var}` segments match any run
/// of characters without `/`; `{+var}` and others match anything).
fn template_matches(template: &str, uri: &str) -> bool {
    fn go(t: &[u8], u: &[u8]) -> bool {
        match t.first() {
            None => u.is_empty(),
            Some(b'{') => {
                let Some(end) = t.iter().position(|c| *c == b'}') else {
                    return t == u;
                };
                let reserved = t
                    .get(1)
                    .is_some_and(|c| matches!(c, b'+' | b'#' | b'/' | b'.' | b'?' | b'&' | b';'));
                let rest = &t[end + 1..];
                (0..=u.len()).any(|i| (reserved || !u[..i].contains(&b'/')) && go(rest, &u[i..]))
            }
            Some(c) => u.first() == Some(c) && go(&t[1..], &u[1..]),
        }
    }
    go(template.as_bytes(), uri.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn catalog(mode: PrefixMode) -> Catalog {
        Catalog::new(
            Naming {
                separator: "__".into(),
                mode,
            },
            vec!["a".into(), "b".into()],
            EventBus::default(),
        )
    }

    #[test]
    fn merges_in_config_order_and_namespaces() {
        let c = catalog(PrefixMode::Always);
        c.update(
            &"b".into(),
            ServerLists {
                tools: vec![json!({"name": "echo", "inputSchema": {}})],
                ..Default::default()
            },
        );
        c.update(
            &"a".into(),
            ServerLists {
                tools: vec![json!({"name": "echo", "inputSchema": {}})],
                resources: vec![json!({"uri": "test://x", "name": "x"})],
                ..Default::default()
            },
        );
        let s = c.snapshot();
        let names: Vec<_> = s
            .tools
            .items
            .iter()
            .map(|t| t["name"].as_str().unwrap_or_default())
            .collect();
        assert_eq!(names, ["a__echo", "b__echo"]);
        let t = c.resolve_name(FeatureKind::Tool, "b__echo").unwrap();
        assert_eq!((&*t.server, t.name.as_deref()), ("b", Some("echo")));
        assert_eq!(s.resources.items[0]["uri"], "a+test://x");
        let r = c.resolve_uri("a+test://x").unwrap();
        assert_eq!((&*r.server, r.name.as_deref()), ("a", Some("test://x")));
        assert!(c.resolve_uri("test://x").is_none());
        assert!(c.resolve_name(FeatureKind::Tool, "zz__echo").is_none());
        // Not in the known list of its server: missing, not routed.
        assert!(c.resolve_name(FeatureKind::Tool, "a__nope").is_none());
    }

    #[test]
    fn never_mode_first_wins_and_templates_route() {
        let c = catalog(PrefixMode::Never);
        c.update(
            &"a".into(),
            ServerLists {
                tools: vec![json!({"name": "echo"})],
                templates: vec![json!({"uriTemplate": "test://template/{id}/data", "name": "t"})],
                ..Default::default()
            },
        );
        c.update(
            &"b".into(),
            ServerLists {
                tools: vec![json!({"name": "echo"}), json!({"name": "other"})],
                ..Default::default()
            },
        );
        assert_eq!(
            &*c.resolve_name(FeatureKind::Tool, "echo").unwrap().server,
            "a"
        );
        assert_eq!(
            &*c.resolve_name(FeatureKind::Tool, "other").unwrap().server,
            "b"
        );
        assert_eq!(
            &*c.resolve_uri("test://template/42/data").unwrap().server,
            "a"
        );
        assert!(c.resolve_uri("test://template/4/2/data").is_none());
    }

    #[test]
    fn list_changed_is_announced_only_on_change() {
        let bus = EventBus::default();
        let mut rx = bus.subscribe();
        let c = Catalog::new(Naming::default(), vec!["a".into()], bus);
        let lists = ServerLists {
            tools: vec![json!({"name": "echo"})],
            ..Default::default()
        };
        c.update(&"a".into(), lists.clone());
        assert!(
            matches!(rx.try_recv(), Ok(GatewayEvent::ListChanged(m)) if m.method == "notifications/tools/list_changed")
        );
        c.update(&"a".into(), lists);
        assert!(rx.try_recv().is_err());
    }

    proptest! {
        #[test]
        fn names_round_trip(server in "[a-z][a-z0-9-]{0,12}", name in "[ -~]{1,40}") {
            let n = Naming::default();
            let exposed = n.expose(&server, &name);
            prop_assert_eq!(n.split(&exposed), Some((server.as_str(), name.as_str())));
        }

        #[test]
        fn uris_round_trip(server in "[a-z][a-z0-9-]{0,12}", uri in "[a-z]{1,8}://[ -~]{0,40}") {
            let n = Naming::default();
            let exposed = n.expose_uri(&server, &uri);
            prop_assert_eq!(n.split_uri(&exposed), Some((server.as_str(), uri.as_str())));
        }
    }
}
