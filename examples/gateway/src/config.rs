//! The reference gateway's TOML configuration: parsing, validation with line numbers, and the
//! built-in default.

use std::{collections::BTreeMap, fmt, net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use mcp_gateway_core::{
    catalog::{Naming, PrefixMode},
    dispatch::ListFailMode,
    upstream::{ProtocolMode, Transport, UpstreamConfig},
};
use serde::Deserialize;
use toml::Spanned;

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    /// Where the MCP endpoint listens (`http://<listen>/mcp`).
    #[serde(default = "default_listen")]
    listen: Spanned<String>,
    /// `always` (default) or `never`.
    #[serde(default)]
    prefix: Option<Spanned<String>>,
    /// Between server and tool name (`__`).
    #[serde(default)]
    separator: Option<Spanned<String>>,
    /// Entries per page of merged lists.
    #[serde(default)]
    page_size: Option<usize>,
    /// `open` (default) or `closed`.
    #[serde(default)]
    list_fail_mode: Option<Spanned<String>>,
    /// Reach link-local and cloud metadata addresses (upstream URLs, resource URIs); refused by
    /// default (server-side request forgery guard, `mcp_gateway_core::ssrf`).
    #[serde(default)]
    allow_link_local: bool,
    /// The MCP endpoint's path.
    #[serde(default)]
    path: Option<String>,
    /// Extra allowed `Host` values (localhost names are always allowed).
    #[serde(default)]
    allowed_hosts: Vec<String>,
    /// Allowed `Origin` values (localhost origins are always allowed).
    #[serde(default)]
    allowed_origins: Vec<String>,
    /// Largest request body.
    #[serde(default)]
    max_body_bytes: Option<usize>,
    /// How long a client may take to send request headers (slowloris defence), ms.
    #[serde(default)]
    header_read_timeout_ms: Option<u64>,
    /// How long a request body may take to arrive, ms.
    #[serde(default)]
    body_read_timeout_ms: Option<u64>,
    /// The key that seals session ids (base64 or hex, 32 bytes); replicas that share it resume
    /// each other's sessions. Default: a random key per process. `session_key_file` reads it from a
    /// file instead.
    #[serde(default)]
    session_key: Option<Spanned<String>>,
    #[serde(default)]
    session_key_file: Option<Spanned<PathBuf>>,
    /// Instructions for clients.
    #[serde(default)]
    instructions: Option<String>,
    /// This gateway's name in logs and audit (multi-replica).
    #[serde(default)]
    gateway_name: Option<String>,
    /// The upstream servers.
    #[serde(default, rename = "server")]
    servers: Vec<Spanned<Server>>,
    /// Who is calling (`mcp-identity`).
    #[serde(default)]
    identity: Option<Spanned<mcp_identity::Config>>,
    /// What callers may see and do (`mcp-policy`).
    #[serde(default)]
    policy: Option<Spanned<mcp_policy::config::Config>>,
    /// What content may pass (`mcp-dlp`).
    #[serde(default)]
    dlp: Option<Spanned<mcp_dlp::Config>>,
    /// What happened (`mcp-audit`).
    #[serde(default)]
    audit: Option<Spanned<mcp_audit::Config>>,
    /// Servers the gateway runs itself (`mcp-managed`).
    #[serde(default)]
    managed: Vec<Spanned<mcp_managed::config::Config>>,
    /// The admin endpoint (`/admin/...`): kill switches, policy reload, API keys, instances.
    #[serde(default)]
    admin: Option<Admin>,
}

/// `[admin]`.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct Admin {
    /// Callers need this role (from their identity) to use the admin endpoint.
    #[serde(default = "default_admin_role")]
    pub role: String,
    /// Or this bearer token (read from the environment variable named here), for operators
    /// without an identity provider.
    #[serde(default)]
    pub token_env: Option<String>,
}

fn default_admin_role() -> String {
    "mcp-admin".into()
}

/// One `[[server]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Server {
    name: Spanned<String>,
    /// A stdio server: the program.
    #[serde(default)]
    command: Option<String>,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    cwd: Option<PathBuf>,
    /// A Streamable HTTP server: the URL.
    #[serde(default)]
    url: Option<Spanned<String>>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    /// Per-call timeout in milliseconds (default 60000).
    #[serde(default)]
    timeout_ms: Option<u64>,
    /// Listing timeout in milliseconds (default 10000).
    #[serde(default)]
    list_timeout_ms: Option<u64>,
    /// `auto` (default), `legacy` or `modern`.
    #[serde(default)]
    protocol: Option<Spanned<String>>,
}

fn default_listen() -> Spanned<String> {
    Spanned::new(0..0, "127.0.0.1:8080".into())
}

/// A configuration problem, with the line it is on. Problems that belong to no single place in
/// the text (`page_size = 0`) have neither line nor column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// 1-based line.
    pub line: Option<usize>,
    /// 1-based column, in bytes from the start of the line; set whenever `line` is.
    pub column: Option<usize>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.line, self.column) {
            (Some(l), Some(c)) => write!(f, "line {l}, column {c}: {}", self.message),
            (Some(l), None) => write!(f, "line {l}: {}", self.message),
            _ => f.write_str(&self.message),
        }
    }
}

/// Line and column (1-based) of a byte offset.
fn position(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    (line, column)
}

/// Collects errors with positions.
struct Problems<'a> {
    text: &'a str,
    list: Vec<ConfigError>,
}

impl<'a> Problems<'a> {
    fn new(text: &'a str) -> Self {
        Self {
            text,
            list: Vec::new(),
        }
    }

    fn at(&mut self, span: std::ops::Range<usize>, message: impl Into<String>) {
        let (line, column) = if span.is_empty() && span.start == 0 {
            (None, None)
        } else {
            let (l, c) = position(self.text, span.start);
            (Some(l), Some(c))
        };
        self.list.push(ConfigError {
            line,
            column,
            message: message.into(),
        });
    }
}

/// What serving needs, validated.
#[derive(Debug)]
pub struct Settings {
    /// Where the MCP endpoint listens (`listen`).
    pub listen: SocketAddr,
    /// How server names prefix feature names (`prefix`, `separator`).
    pub naming: Naming,
    /// Entries per page of merged lists (`page_size`).
    pub page_size: Option<usize>,
    /// Whether a list fails when one upstream's listing fails (`list_fail_mode`).
    pub list_fail_mode: ListFailMode,
    /// Whether link-local and cloud metadata addresses may be reached (`allow_link_local`).
    pub allow_link_local: bool,
    /// The MCP endpoint's path (`path`).
    pub path: Option<String>,
    /// Extra allowed `Host` values (`allowed_hosts`).
    pub allowed_hosts: Vec<String>,
    /// Allowed `Origin` values (`allowed_origins`).
    pub allowed_origins: Vec<String>,
    /// Largest request body (`max_body_bytes`).
    pub max_body_bytes: Option<usize>,
    /// How long a client may take to send request headers, ms (`header_read_timeout_ms`).
    pub header_read_timeout_ms: Option<u64>,
    /// How long a request body may take to arrive, ms (`body_read_timeout_ms`).
    pub body_read_timeout_ms: Option<u64>,
    /// The encoded session key (`session_key`, or the content of `session_key_file`).
    pub session_key: Option<String>,
    /// Instructions for clients (`instructions`).
    pub instructions: Option<String>,
    /// This gateway's name in logs and audit (`gateway_name`).
    pub gateway_name: Option<String>,
    /// The upstream servers: every `[[server]]`, then the `[[managed]]` servers that run locally.
    pub upstreams: Vec<UpstreamConfig>,
    /// `[identity]`.
    pub identity: Option<mcp_identity::Config>,
    /// `[policy]`.
    pub policy: Option<mcp_policy::config::Config>,
    /// `[dlp]`.
    pub dlp: Option<mcp_dlp::Config>,
    /// `[audit]`.
    pub audit: Option<mcp_audit::Config>,
    /// Every `[[managed]]` entry.
    pub managed: Vec<mcp_managed::config::Config>,
    /// `[admin]`.
    pub admin: Option<Admin>,
    /// The file's text (policy errors point into it).
    pub text: String,
}

/// Which files parsing reads besides the text itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Files {
    /// `session_key_file` and `policy.file`, as serving needs.
    Read,
    /// None: their paths are taken as given.
    Skip,
}

/// Parses and validates a configuration file's text; every problem is reported, with its line.
///
/// Besides the text, this reads the files the text names: `session_key_file` (its key is
/// checked and becomes [`Settings::session_key`]) and `policy.file` (compiled, to report its
/// errors), and the system's root certificates when `[dlp]` has engines (their HTTP client is
/// built). It opens no connection and starts no process or task. For text from an untrusted
/// source use [`validate`], which reads nothing.
pub fn parse(text: &str) -> Result<Settings, Vec<ConfigError>> {
    parse_with(text, Files::Read)
}

/// Validates a configuration file's text without reading any file: everything [`parse`] checks
/// except the contents of `session_key_file` and `policy.file` (their paths are taken as given;
/// a policy kept in a file is not compiled), and without building the DLP engines' HTTP client
/// (which loads the system's root certificates). Text from anywhere is safe here: a path such as
/// `/dev/zero` in it is never opened, and nothing touches the network or starts a process or
/// thread. The fuzz target `gateway_config` (in `fuzz/`) feeds this path.
pub fn validate(text: &str) -> Result<(), Vec<ConfigError>> {
    parse_with(text, Files::Skip).map(|_| ())
}

/// [`parse`], reading the files or not.
pub(crate) fn parse_with(text: &str, files: Files) -> Result<Settings, Vec<ConfigError>> {
    let file: File = match toml::from_str(text) {
        Ok(f) => f,
        Err(e) => {
            let (line, column) = e.span().map(|s| position(text, s.start)).unzip();
            return Err(vec![ConfigError {
                line,
                column,
                message: e.message().trim().to_owned(),
            }]);
        }
    };
    let mut p = Problems::new(text);

    let listen = match file.listen.get_ref().parse::<SocketAddr>() {
        Ok(a) => a,
        Err(e) => {
            p.at(
                file.listen.span(),
                format!(
                    "listen = \"{}\" is not an address like 127.0.0.1:8080: {e}",
                    file.listen.get_ref()
                ),
            );
            SocketAddr::from(([127, 0, 0, 1], 8080))
        }
    };
    let mut naming = Naming::default();
    if let Some(prefix) = &file.prefix {
        match prefix.get_ref().as_str() {
            "always" => naming.mode = PrefixMode::Always,
            "never" => naming.mode = PrefixMode::Never,
            other => p.at(
                prefix.span(),
                format!("prefix = \"{other}\": expected \"always\" or \"never\""),
            ),
        }
    }
    if let Some(sep) = &file.separator {
        if sep.get_ref().is_empty() || sep.get_ref().chars().any(char::is_whitespace) {
            p.at(
                sep.span(),
                "separator must be non-empty and contain no white space",
            );
        } else {
            naming.separator = sep.get_ref().clone();
        }
    }
    let list_fail_mode = match file
        .list_fail_mode
        .as_ref()
        .map(|m| (m.span(), m.get_ref().as_str()))
    {
        None | Some((_, "open")) => ListFailMode::Open,
        Some((_, "closed")) => ListFailMode::Closed,
        Some((span, other)) => {
            p.at(
                span,
                format!("list_fail_mode = \"{other}\": expected \"open\" or \"closed\""),
            );
            ListFailMode::Open
        }
    };
    if file.page_size == Some(0) {
        p.at(0..0, "page_size must be at least 1");
    }
    let session_key = match (&file.session_key, &file.session_key_file) {
        (Some(_), Some(f)) => {
            p.at(f.span(), "give session_key or session_key_file, not both");
            None
        }
        (Some(k), None) => {
            if let Err(e) = mcp_gateway_core::session::SessionKey::from_encoded(k.get_ref()) {
                p.at(k.span(), format!("session_key: {e}"));
            }
            Some(k.get_ref().clone())
        }
        (None, Some(_)) if files == Files::Skip => None,
        (None, Some(f)) => match std::fs::read_to_string(f.get_ref()) {
            Ok(s) => {
                let s = s.trim().to_owned();
                if let Err(e) = mcp_gateway_core::session::SessionKey::from_encoded(&s) {
                    p.at(
                        f.span(),
                        format!("session_key_file {}: {e}", f.get_ref().display()),
                    );
                }
                Some(s)
            }
            Err(e) => {
                p.at(
                    f.span(),
                    format!(
                        "cannot read session_key_file {}: {e}",
                        f.get_ref().display()
                    ),
                );
                None
            }
        },
        (None, None) => None,
    };

    let mut upstreams = Vec::new();
    let mut names = std::collections::HashSet::new();
    for entry in &file.servers {
        let span = entry.span();
        let s = entry.get_ref();
        let name = s.name.get_ref();
        if let Err(e) = naming.check_server_name(name) {
            p.at(s.name.span(), e);
        }
        if !names.insert(name.clone()) {
            p.at(s.name.span(), format!("server '{name}' is defined twice"));
        }
        let transport = match (&s.command, &s.url) {
            (Some(_), Some(url)) => {
                p.at(url.span(), format!("server '{name}' has both command and url: a server is either stdio (command) or HTTP (url)"));
                continue;
            }
            (None, None) => {
                p.at(span, format!("server '{name}' needs either command = \"...\" (stdio) or url = \"http://...\" (Streamable HTTP)"));
                continue;
            }
            (Some(command), None) => {
                if command.trim().is_empty() {
                    p.at(s.name.span(), format!("server '{name}': command is empty"));
                }
                if !s.headers.is_empty() {
                    p.at(
                        s.name.span(),
                        format!("server '{name}': headers only apply to url servers"),
                    );
                }
                for key in s.env.keys() {
                    if key.is_empty() || key.contains('=') || key.contains('\0') {
                        p.at(
                            s.name.span(),
                            format!("server '{name}': invalid environment variable name '{key}'"),
                        );
                    }
                }
                Transport::Stdio {
                    command: command.clone(),
                    args: s.args.clone(),
                    env: s.env.clone(),
                    cwd: s.cwd.clone(),
                }
            }
            (None, Some(url)) => {
                if !file.allow_link_local
                    && let Some((host, why)) = mcp_gateway_core::ssrf::refused_url(url.get_ref())
                {
                    p.at(
                        url.span(),
                        format!(
                            "server '{name}': url host {host} is {why}; refused unless allow_link_local = true"
                        ),
                    );
                }
                match url.get_ref().parse::<http::Uri>() {
                    Ok(u)
                        if matches!(u.scheme_str(), Some("http" | "https"))
                            && u.host().is_some() => {}
                    _ => p.at(
                        url.span(),
                        format!(
                            "server '{name}': url \"{}\" is not an http(s) URL",
                            url.get_ref()
                        ),
                    ),
                }
                if !s.args.is_empty() || !s.env.is_empty() || s.cwd.is_some() {
                    p.at(
                        s.name.span(),
                        format!("server '{name}': args, env and cwd only apply to command servers"),
                    );
                }
                for (k, v) in &s.headers {
                    if http::HeaderName::try_from(k.as_str()).is_err()
                        || http::HeaderValue::try_from(v.as_str()).is_err()
                    {
                        p.at(
                            s.name.span(),
                            format!("server '{name}': invalid header '{k}'"),
                        );
                    }
                }
                Transport::Http {
                    url: url.get_ref().clone(),
                    headers: s.headers.clone(),
                }
            }
        };
        let mut config = UpstreamConfig::new(Arc::<str>::from(name.as_str()), transport);
        if let Some(ms) = s.timeout_ms {
            config.call_timeout = Duration::from_millis(ms.max(1));
        }
        if let Some(ms) = s.list_timeout_ms {
            config.list_timeout = Duration::from_millis(ms.max(1));
        }
        if let Some(protocol) = &s.protocol {
            config.protocol = match protocol.get_ref().as_str() {
                "auto" => ProtocolMode::Auto,
                "legacy" => ProtocolMode::Legacy,
                "modern" => ProtocolMode::Modern,
                other => {
                    p.at(
                        protocol.span(),
                        format!(
                            "protocol = \"{other}\": expected \"auto\", \"legacy\" or \"modern\""
                        ),
                    );
                    ProtocolMode::Auto
                }
            };
        }
        config.allow_link_local = file.allow_link_local;
        upstreams.push(config);
    }
    if let Some(identity) = &file.identity
        && let Err(e) = identity.get_ref().validate()
    {
        p.at(identity.span(), e.to_string());
    }
    if let Some(policy) = &file.policy
        && (files == Files::Read || policy.get_ref().file.is_none())
        && let Err(e) = policy.get_ref().check(Some(text))
    {
        p.at(policy.span(), e.to_string());
    }
    if let Some(dlp) = &file.dlp
        && let Err(e) = match files {
            Files::Read => dlp.get_ref().layer().map(|_| ()),
            // Building the layer builds the engines' HTTP client, which reads the system's root
            // certificates.
            Files::Skip => dlp.get_ref().validate(),
        }
    {
        p.at(dlp.span(), e.to_string());
    }
    if let Some(audit) = &file.audit
        && let Err(e) = audit.get_ref().validate()
    {
        p.at(audit.span(), e.to_string());
    }
    let types = mcp_managed::InstanceTypes::default();
    let mut managed_names = std::collections::HashSet::new();
    for entry in &file.managed {
        let (span, m) = (entry.span(), entry.get_ref());
        let name = &m.spec.name;
        if let Err(e) = m.validate(&types) {
            p.at(span, format!("managed server '{name}': {e}"));
            continue;
        }
        // Every managed server becomes an upstream when serving (local ones here, the others
        // through a catalog relay), so its name must pass what the gateway checks then.
        if let Err(e) = naming.check_server_name(name) {
            p.at(span, format!("managed {e}"));
            continue;
        }
        if names.contains(name) {
            p.at(
                span,
                format!("'{name}' is both a [[server]] and a [[managed]] server"),
            );
            continue;
        }
        if !managed_names.insert(name.clone()) {
            p.at(span, format!("managed server '{name}' is defined twice"));
            continue;
        }
        // The catalog lists a local managed server's features from one local run of its
        // command; servers in containers or on SSH hosts are listed through a catalog relay
        // (set up when serving). Calls go to the caller's instance (the managed layer picks it).
        if !m.runs_locally() {
            continue;
        }
        match types.resolve(&m.spec) {
            Ok(resolved) if !resolved.argv.is_empty() => {
                upstreams.push(UpstreamConfig::new(
                    Arc::<str>::from(m.spec.name.as_str()),
                    Transport::Stdio {
                        command: resolved.argv[0].clone(),
                        args: resolved.argv[1..].to_vec(),
                        env: resolved.spec.env.clone(),
                        cwd: None,
                    },
                ));
            }
            Ok(_) => p.at(span, format!("managed server '{name}': no command")),
            Err(e) => p.at(span, format!("managed server '{name}': {e}")),
        }
    }
    if naming.mode == PrefixMode::Never && upstreams.len() > 1 {
        tracing::warn!(
            "prefix = \"never\" with several servers: clashing names are served by the first server only"
        );
    }
    if !p.list.is_empty() {
        return Err(p.list);
    }
    Ok(Settings {
        listen,
        naming,
        page_size: file.page_size,
        list_fail_mode,
        allow_link_local: file.allow_link_local,
        path: file.path,
        allowed_hosts: file.allowed_hosts,
        allowed_origins: file.allowed_origins,
        max_body_bytes: file.max_body_bytes,
        header_read_timeout_ms: file.header_read_timeout_ms.map(|ms| ms.max(1)),
        body_read_timeout_ms: file.body_read_timeout_ms.map(|ms| ms.max(1)),
        session_key,
        instructions: file.instructions,
        gateway_name: file.gateway_name,
        upstreams,
        identity: file.identity.map(Spanned::into_inner),
        policy: file.policy.map(Spanned::into_inner),
        dlp: file.dlp.map(Spanned::into_inner),
        audit: file.audit.map(Spanned::into_inner),
        managed: file.managed.into_iter().map(Spanned::into_inner).collect(),
        admin: file.admin,
        text: text.to_owned(),
    })
}

/// The built-in default: the demo server (this very binary, `mcp-gateway demo-server`) behind
/// the gateway on 127.0.0.1:8080.
pub fn default_text() -> String {
    let exe = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "mcp-gateway".into());
    format!(
        "listen = \"127.0.0.1:8080\"\n\n[[server]]\nname = \"demo\"\ncommand = {}\nargs = [\"demo-server\"]\n",
        toml_string(&exe)
    )
}

fn toml_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_issue_example_parses_exactly_as_written() {
        let text = r#"listen = "127.0.0.1:8080"          # MCP endpoint: http://127.0.0.1:8080/mcp
# prefix = "never"                 # optional: pass-through, for a single upstream

[[server]]
name = "time"                      # its tools appear as time__<tool>
command = "mcp-server-time"        # a stdio upstream
args = []
env = {}

[[server]]
name = "everything"
url = "http://127.0.0.1:3001/mcp"  # a Streamable HTTP upstream
"#;
        let s = parse(text).unwrap();
        assert_eq!(s.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(s.upstreams.len(), 2);
        assert_eq!(&*s.upstreams[0].name, "time");
        assert!(
            matches!(&s.upstreams[1].transport, Transport::Http { url, .. } if url == "http://127.0.0.1:3001/mcp")
        );
        assert_eq!(s.naming.mode, PrefixMode::Always);
    }

    #[test]
    fn errors_carry_line_numbers() {
        let text = "listen = \"127.0.0.1:8080\"\n\n[[server]]\nname = \"a\"\ncommand = \"x\"\nurl = \"http://h/mcp\"\n\n[[server]]\nname = \"bad name\"\ncommand = \"y\"\n";
        let errors = parse(text).unwrap_err();
        let rendered: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        assert!(
            rendered
                .iter()
                .any(|e| e.starts_with("line 6") && e.contains("both command and url")),
            "{rendered:?}"
        );
        assert!(
            rendered
                .iter()
                .any(|e| e.starts_with("line 9") && e.contains("bad name")),
            "{rendered:?}"
        );
    }

    #[test]
    fn syntax_and_unknown_fields_are_reported_with_lines() {
        let e = parse("listen = \"127.0.0.1:1\"\n[[server]]\nname = \"a\"\ncomand = \"x\"\n")
            .unwrap_err();
        assert_eq!(e[0].line, Some(4), "{}", e[0]);
        assert!(e[0].message.contains("comand"), "{}", e[0]);
        let e = parse("listen = \n").unwrap_err();
        assert_eq!(e[0].line, Some(1));
        let e = parse("listen = \"nonsense\"\n").unwrap_err();
        assert!(e[0].to_string().contains("line 1"), "{}", e[0]);
    }

    fn managed(name: &str) -> String {
        format!(
            "[[managed]]\nruntime = {{ type = \"local\" }}\n[managed.spec]\nname = \"{name}\"\nkind = \"command\"\ncommand = \"true\"\n"
        )
    }

    /// Found by the fuzz target `gateway_config`: `check` accepted managed server names that
    /// serving then refused (`Gateway::builder().build()` checks every upstream's name).
    #[test]
    fn managed_server_names_are_checked_like_server_names() {
        let text = format!("separator = \"-\"\n\n{}", managed("a-b"));
        let e = parse(&text).unwrap_err();
        assert_eq!(e.len(), 1, "{e:?}");
        assert_eq!(
            e[0].to_string(),
            "line 3, column 1: managed server name 'a-b' must not contain the separator '-'"
        );
        let e = parse(&managed("1a")).unwrap_err();
        assert!(
            e[0].message.contains("must start with a letter"),
            "{}",
            e[0]
        );
        assert!(parse(&managed("a-b")).is_ok());
    }

    /// Found with the same target: two managed servers of one name were reported as "both a
    /// [[server]] and a [[managed]] server" (local ones) or not at all (containers, SSH).
    #[test]
    fn managed_servers_defined_twice_are_reported_as_such() {
        let text = format!("{}\n{}", managed("a"), managed("a"));
        let e = parse(&text).unwrap_err();
        assert_eq!(e.len(), 1, "{e:?}");
        assert_eq!(e[0].line, Some(8), "{}", e[0]);
        assert_eq!(e[0].message, "managed server 'a' is defined twice");
        let text = format!(
            "[[server]]\nname = \"a\"\ncommand = \"x\"\n\n{}",
            managed("a")
        );
        let e = parse(&text).unwrap_err();
        assert_eq!(
            e[0].message,
            "'a' is both a [[server]] and a [[managed]] server"
        );
        assert_eq!(e[0].line, Some(5), "{}", e[0]);
    }

    /// `validate` reads none of the files a text names; `parse` reads them.
    #[test]
    fn validate_reads_no_file() {
        let text = "session_key_file = \"/nonexistent/key\"\n";
        let e = parse(text).unwrap_err();
        assert!(
            e[0].message.starts_with("cannot read session_key_file"),
            "{}",
            e[0]
        );
        assert_eq!(validate(text), Ok(()));
        let text = "[policy]\nfile = \"/nonexistent/policy.toml\"\n";
        let e = parse(text).unwrap_err();
        assert!(e[0].message.contains("cannot read policy file"), "{}", e[0]);
        assert_eq!(validate(text), Ok(()));
        // What needs no file is checked the same way.
        let text = "session_key = \"c2hvcnQ=\"\nsession_key_file = \"/dev/zero\"\n";
        assert_eq!(validate(text).unwrap_err(), parse(text).unwrap_err());
        let text = "[policy]\n[policy.servers.demo]\ntools = \"sometimes\"\n";
        assert_eq!(validate(text).unwrap_err(), parse(text).unwrap_err());
        let text = "[dlp]\n[[dlp.engines]]\nname = \"e\"\nurl = \"ftp://h/x\"\n";
        let e = validate(text).unwrap_err();
        assert!(
            e[0].message.contains("url must be http or https"),
            "{}",
            e[0]
        );
        assert_eq!(e, parse(text).unwrap_err());
    }

    #[test]
    fn default_config_is_valid() {
        let s = parse(&default_text()).unwrap();
        assert_eq!(s.upstreams.len(), 1);
        assert_eq!(&*s.upstreams[0].name, "demo");
    }
}
