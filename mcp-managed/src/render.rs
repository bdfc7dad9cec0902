//! Generated deployment text for a resolved spec: the `docker run` command an operator can paste,
//! a Kubernetes manifest (Secret, Deployment, Service, and a NetworkPolicy when egress is off),
//! and a compose file.
//!
//! Every value is quoted for where it lands: POSIX single quotes for the shell; YAML double-quoted
//! scalars with every non-printable or non-ASCII character escaped; `$` doubled for compose
//! interpolation and for Kubernetes `$(VAR)` expansion. The shared secret never appears in the
//! generated command: the container reads it from the `MCP_BRIDGE_SECRET` environment variable of
//! whoever runs `docker run` (`-e NAME` without a value).

use std::{borrow::Cow, collections::BTreeMap, fmt::Write as _, net::SocketAddr};

use serde_json::{Map, Value, json};

use crate::{
    spec::{CONTAINER_PORT, SECRET_ENV},
    types::Resolved,
};

/// Options that are not part of the spec: where things are, what to call them.
#[derive(Debug, Clone)]
pub struct RenderOptions {
    /// Where the bridge binary is inside the image.
    pub bridge_in_image: String,
    /// A host path of the bridge binary to mount read-only into a stock image (`None`: the image
    /// already holds the bridge at `bridge_in_image`).
    pub bridge_from_host: Option<String>,
    /// The instance name, when one server has several instances (`alice`, `team-a`).
    pub instance: Option<String>,
    /// Extra labels (the instance manager marks what it owns).
    pub labels: BTreeMap<String, String>,
    /// Kubernetes namespace.
    pub namespace: Option<String>,
}

impl Default for RenderOptions {
    fn default() -> Self {
        Self {
            bridge_in_image: "/mcp-bridge".into(),
            bridge_from_host: None,
            instance: None,
            labels: BTreeMap::new(),
            namespace: None,
        }
    }
}

// === quoting ===

/// Quotes one word for a POSIX shell: unchanged when it holds only safe characters, otherwise
/// in single quotes (a `'` becomes `'\''`). Newlines and every metacharacter are inert inside.
pub fn shell_quote(s: &str) -> Cow<'_, str> {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-./:=@%+,".contains(&b))
    {
        Cow::Borrowed(s)
    } else {
        Cow::Owned(format!("'{}'", s.replace('\'', r"'\''")))
    }
}

/// A YAML double-quoted scalar; everything outside printable ASCII is escaped, so no value can
/// break the document's structure (YAML 1.1 line breaks such as U+2028 included).
pub fn yaml_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            ' '..='~' => out.push(c),
            c if (c as u32) <= 0xFFFF => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => {
                let _ = write!(out, "\\U{:08X}", c as u32);
            }
        }
    }
    out.push('"');
    out
}

fn plain_key(k: &str) -> bool {
    let mut b = k.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_alphabetic())
        && b.all(|c| c.is_ascii_alphanumeric() || b"_-./".contains(&c))
        && !matches!(
            k.to_ascii_lowercase().as_str(),
            "y" | "n" | "yes" | "no" | "on" | "off" | "true" | "false" | "null"
        )
}

fn yaml_scalar(v: &Value) -> Option<String> {
    match v {
        Value::Null => Some("null".into()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        Value::String(s) => Some(yaml_quote(s)),
        Value::Array(a) if a.is_empty() => Some("[]".into()),
        Value::Object(o) if o.is_empty() => Some("{}".into()),
        _ => None,
    }
}

fn yaml_map(m: &Map<String, Value>, indent: usize, inline_first: bool, out: &mut String) {
    for (i, (k, v)) in m.iter().enumerate() {
        if !(i == 0 && inline_first) {
            out.push_str(&" ".repeat(indent));
        }
        if plain_key(k) {
            out.push_str(k);
        } else {
            out.push_str(&yaml_quote(k));
        }
        out.push(':');
        yaml_value_after_key(v, indent, out);
    }
}

fn yaml_value_after_key(v: &Value, indent: usize, out: &mut String) {
    match (yaml_scalar(v), v) {
        (Some(s), _) => {
            out.push(' ');
            out.push_str(&s);
            out.push('\n');
        }
        (None, Value::Object(m)) => {
            out.push('\n');
            yaml_map(m, indent + 2, false, out);
        }
        (None, Value::Array(a)) => {
            out.push('\n');
            yaml_seq(a, indent + 2, out);
        }
        (None, _) => out.push('\n'),
    }
}

fn yaml_seq(a: &[Value], indent: usize, out: &mut String) {
    for v in a {
        out.push_str(&" ".repeat(indent));
        out.push_str("- ");
        match (yaml_scalar(v), v) {
            (Some(s), _) => {
                out.push_str(&s);
                out.push('\n');
            }
            (None, Value::Object(m)) => yaml_map(m, indent + 2, true, out),
            (None, Value::Array(inner)) => {
                out.push('\n');
                yaml_seq(inner, indent + 2, out);
            }
            (None, _) => out.push('\n'),
        }
    }
}

/// Block-style YAML for a JSON value (a mapping or sequence at the top).
pub fn to_yaml(v: &Value) -> String {
    let mut out = String::new();
    match v {
        Value::Object(m) if !m.is_empty() => yaml_map(m, 0, false, &mut out),
        Value::Array(a) if !a.is_empty() => yaml_seq(a, 0, &mut out),
        other => {
            out.push_str(&yaml_scalar(other).unwrap_or_default());
            out.push('\n');
        }
    }
    out
}

/// Doubles every `$` (compose interpolation, Kubernetes `$(VAR)` expansion).
fn dollar_escape(s: &str) -> String {
    s.replace('$', "$$")
}

// === the plan shared by the docker command and the Docker runtime ===

/// Everything a container needs, in one place: the `docker run` command and the Docker runtime
/// (bollard) are both built from it.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerPlan {
    /// Container name.
    pub name: String,
    /// Image.
    pub image: String,
    /// The bridge inside the container.
    pub entrypoint: String,
    /// The bridge's arguments: `--listen 0.0.0.0:8080 -- <server argv>`.
    pub cmd: Vec<String>,
    /// Environment: `(name, Some(value))` or `(name, None)` = taken from the caller's environment.
    pub env: Vec<(String, Option<String>)>,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Published address on the host (`None`: 127.0.0.1 and a port Docker picks).
    pub publish: Option<SocketAddr>,
    /// CPUs.
    pub cpus: Option<f64>,
    /// Memory in MiB.
    pub memory_mb: Option<u64>,
    /// Process limit.
    pub pids: Option<u32>,
    /// Network to attach to.
    pub network: Option<String>,
    /// Host path of the bridge to mount read-only at `entrypoint`.
    pub bridge_mount: Option<String>,
}

/// Container name for a server (and instance).
pub fn container_name(server: &str, instance: Option<&str>) -> String {
    match instance {
        Some(i) => format!("mcp-{server}-{i}"),
        None => format!("mcp-{server}"),
    }
}

impl ContainerPlan {
    /// The plan for a resolved spec. Fails when the spec has no image.
    pub fn new(r: &Resolved, opts: &RenderOptions) -> Result<Self, crate::spec::SpecError> {
        let image = r.image.clone().ok_or_else(|| {
            crate::spec::SpecError::new(&r.spec.name, "image", "a container runtime needs an image")
        })?;
        let mut cmd = vec![
            "--listen".to_string(),
            format!("0.0.0.0:{CONTAINER_PORT}"),
            "--".into(),
        ];
        cmd.extend(r.argv.iter().cloned());
        let mut env = vec![(SECRET_ENV.to_string(), None)];
        env.extend(r.spec.secrets.keys().map(|k| (k.clone(), None)));
        env.extend(r.spec.env.iter().map(|(k, v)| (k.clone(), Some(v.clone()))));
        let mut labels = r.spec.labels.clone();
        labels.insert("mcp.managed/server".into(), r.spec.name.clone());
        if let Some(i) = &opts.instance {
            labels.insert("mcp.managed/instance".into(), i.clone());
        }
        labels.extend(opts.labels.clone());
        Ok(Self {
            name: container_name(&r.spec.name, opts.instance.as_deref()),
            image,
            entrypoint: opts.bridge_in_image.clone(),
            cmd,
            env,
            labels,
            publish: r.spec.address,
            cpus: r.spec.resources.cpus,
            memory_mb: r.spec.resources.memory_mb,
            pids: r.spec.resources.pids,
            network: r.spec.network.network.clone(),
            bridge_mount: opts.bridge_from_host.clone(),
        })
    }

    /// The `-p` value.
    pub fn publish_arg(&self) -> String {
        match self.publish {
            Some(a) => format!("{}:{}:{CONTAINER_PORT}", a.ip(), a.port()),
            None => format!("127.0.0.1::{CONTAINER_PORT}"),
        }
    }

    /// The `docker run` argv (program first, detached).
    pub fn docker_argv(&self) -> Vec<String> {
        let mut a: Vec<String> = [
            "docker",
            "run",
            "--detach",
            "--name",
            &self.name,
            "--read-only",
            "--tmpfs",
            "/tmp:rw,noexec,nosuid,size=64m",
            "--cap-drop",
            "ALL",
            "--security-opt",
            "no-new-privileges",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if let Some(c) = self.cpus {
            a.extend(["--cpus".into(), c.to_string()]);
        }
        if let Some(m) = self.memory_mb {
            a.extend(["--memory".into(), format!("{m}m")]);
        }
        if let Some(p) = self.pids {
            a.extend(["--pids-limit".into(), p.to_string()]);
        }
        if let Some(n) = &self.network {
            a.extend(["--network".into(), n.clone()]);
        }
        for (k, v) in &self.labels {
            a.extend(["--label".into(), format!("{k}={v}")]);
        }
        for (k, v) in &self.env {
            a.push("--env".into());
            a.push(match v {
                Some(v) => format!("{k}={v}"),
                None => k.clone(),
            });
        }
        a.extend(["--publish".into(), self.publish_arg()]);
        if let Some(m) = &self.bridge_mount {
            a.extend(["--volume".into(), format!("{m}:{}:ro", self.entrypoint)]);
        }
        a.extend([
            "--entrypoint".into(),
            self.entrypoint.clone(),
            self.image.clone(),
        ]);
        a.extend(self.cmd.iter().cloned());
        a
    }

    /// The command for a shell, one option per line, every word quoted as needed.
    pub fn docker_command(&self) -> String {
        let argv = self.docker_argv();
        let mut out = String::new();
        let mut i = 0;
        while i < argv.len() {
            let w = &argv[i];
            if i > 0 {
                // Break before options (and their value) for readability.
                if w.starts_with("--") && i < argv.len() && !self.cmd.iter().any(|c| c == w) {
                    out.push_str(" \\\n  ");
                } else {
                    out.push(' ');
                }
            }
            out.push_str(&shell_quote(w));
            i += 1;
        }
        out.push('\n');
        out
    }
}

/// The `docker run` command for a resolved spec, with a comment on how the secret is passed.
pub fn docker_run(r: &Resolved, opts: &RenderOptions) -> Result<String, crate::spec::SpecError> {
    let plan = ContainerPlan::new(r, opts)?;
    let mut out = format!(
        "# The shared secret is read from the environment (never on the command line):\n\
         #   export {SECRET_ENV}=\"$(cat /path/to/secret)\"\n"
    );
    if !r.spec.secrets.is_empty() {
        let names: Vec<&str> = r.spec.secrets.keys().map(String::as_str).collect();
        let _ = writeln!(out, "# Also export: {}", names.join(" "));
    }
    out.push_str(&plan.docker_command());
    Ok(out)
}

// === Kubernetes ===

fn k8s_labels(r: &Resolved, opts: &RenderOptions) -> Map<String, Value> {
    let mut m = Map::new();
    for (k, v) in &r.spec.labels {
        m.insert(k.clone(), Value::String(v.clone()));
    }
    for (k, v) in &opts.labels {
        m.insert(k.clone(), Value::String(v.clone()));
    }
    m.insert("app.kubernetes.io/name".into(), json!(r.spec.name));
    m.insert("app.kubernetes.io/managed-by".into(), json!("mcp-gateway"));
    if let Some(i) = &opts.instance {
        m.insert("mcp.managed/instance".into(), json!(i));
    }
    m
}

/// The Kubernetes objects for a resolved spec: Secret (the bridge secret, and each spec secret
/// from `secret_values`; missing ones are left empty and listed in an annotation), Deployment,
/// Service, and a NetworkPolicy denying egress when the spec says so.
pub fn k8s_objects(
    r: &Resolved,
    opts: &RenderOptions,
    bridge_secret: &str,
    secret_values: &BTreeMap<String, String>,
) -> Result<Vec<Value>, crate::spec::SpecError> {
    let image = r.image.clone().ok_or_else(|| {
        crate::spec::SpecError::new(&r.spec.name, "image", "Kubernetes needs an image")
    })?;
    let name = container_name(&r.spec.name, opts.instance.as_deref());
    let labels = Value::Object(k8s_labels(r, opts));
    let mut selector = Map::new();
    selector.insert("app.kubernetes.io/name".into(), json!(r.spec.name));
    if let Some(i) = &opts.instance {
        selector.insert("mcp.managed/instance".into(), json!(i));
    }
    let mut meta = json!({"name": name, "labels": labels});
    if let Some(ns) = &opts.namespace {
        meta["namespace"] = json!(ns);
    }

    let mut data = Map::new();
    data.insert(SECRET_ENV.into(), json!(bridge_secret));
    let mut unfilled = Vec::new();
    for k in r.spec.secrets.keys() {
        match secret_values.get(k) {
            Some(v) => data.insert(k.clone(), json!(v)),
            None => {
                unfilled.push(k.as_str());
                data.insert(k.clone(), json!(""))
            }
        };
    }
    let mut secret = json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": meta.clone(),
        "type": "Opaque", "stringData": data,
    });
    if !unfilled.is_empty() {
        secret["metadata"]["annotations"] = json!({"mcp.managed/unfilled": unfilled.join(",")});
    }

    let mut env = vec![
        json!({"name": SECRET_ENV, "valueFrom": {"secretKeyRef": {"name": name, "key": SECRET_ENV}}}),
    ];
    for k in r.spec.secrets.keys() {
        env.push(json!({"name": k, "valueFrom": {"secretKeyRef": {"name": name, "key": k}}}));
    }
    for (k, v) in &r.spec.env {
        env.push(json!({"name": k, "value": dollar_escape(v)}));
    }
    let mut args = vec![
        "--listen".to_string(),
        format!("0.0.0.0:{CONTAINER_PORT}"),
        "--".into(),
    ];
    args.extend(r.argv.iter().map(|a| dollar_escape(a)));
    let mut limits = Map::new();
    if let Some(c) = r.spec.resources.cpus {
        limits.insert(
            "cpu".into(),
            json!(format!("{}m", (c * 1000.0).round() as u64)),
        );
    }
    if let Some(m) = r.spec.resources.memory_mb {
        limits.insert("memory".into(), json!(format!("{m}Mi")));
    }
    let probe = |path: &str| {
        json!({"httpGet": {"path": path, "port": CONTAINER_PORT},
               "periodSeconds": r.health.interval.as_secs().max(1),
               "failureThreshold": r.health.failure_threshold})
    };
    let container = json!({
        "name": "server",
        "image": image,
        "command": [dollar_escape(&opts.bridge_in_image)],
        "args": args,
        "env": env,
        "ports": [{"name": "mcp", "containerPort": CONTAINER_PORT}],
        "resources": {"limits": limits},
        "securityContext": {
            "readOnlyRootFilesystem": true,
            "allowPrivilegeEscalation": false,
            "capabilities": {"drop": ["ALL"]},
        },
        "readinessProbe": probe("/readyz"),
        "livenessProbe": probe("/healthz"),
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    });
    let deployment = json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta.clone(),
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": selector.clone()},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "automountServiceAccountToken": false,
                    "containers": [container],
                    "volumes": [{"name": "tmp", "emptyDir": {"medium": "Memory"}}],
                },
            },
        },
    });
    let service = json!({
        "apiVersion": "v1", "kind": "Service", "metadata": meta.clone(),
        "spec": {
            "selector": selector.clone(),
            "ports": [{"name": "mcp", "port": 80, "targetPort": CONTAINER_PORT}],
        },
    });
    let mut objects = vec![secret, deployment, service];
    if !r.spec.network.egress {
        objects.push(json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": meta,
            "spec": {"podSelector": {"matchLabels": selector}, "policyTypes": ["Egress"], "egress": []},
        }));
    }
    Ok(objects)
}

/// The Kubernetes manifest (a YAML stream) for a resolved spec; see [`k8s_objects`].
pub fn k8s_manifest(
    r: &Resolved,
    opts: &RenderOptions,
    bridge_secret: &str,
    secret_values: &BTreeMap<String, String>,
) -> Result<String, crate::spec::SpecError> {
    let objects = k8s_objects(r, opts, bridge_secret, secret_values)?;
    Ok(objects
        .iter()
        .map(|o| format!("---\n{}", to_yaml(o)))
        .collect())
}

/// Checks what a cluster would check first on generated objects (there is no cluster here):
/// names are DNS labels, label keys and values have label syntax, selectors match the pod
/// template, and every container has an image, probes and a read-only root.
pub fn validate_k8s(objects: &[Value]) -> Result<(), String> {
    for o in objects {
        let kind = o["kind"].as_str().ok_or("object without kind")?;
        o["apiVersion"]
            .as_str()
            .ok_or("object without apiVersion")?;
        let name = o["metadata"]["name"]
            .as_str()
            .ok_or("object without name")?;
        if !crate::spec::is_dns_label(name, 63) {
            return Err(format!("{kind} name {name:?} is not a DNS label"));
        }
        if let Some(labels) = o["metadata"]["labels"].as_object() {
            for (k, v) in labels {
                let v = v.as_str().ok_or("label value is not a string")?;
                let mut probe = crate::spec::InstanceSpec::new("x", "command");
                probe.labels.insert(k.clone(), v.to_string());
                probe.validate().map_err(|e| e.to_string())?;
            }
        }
        if kind == "Deployment" {
            let sel = o["spec"]["selector"]["matchLabels"]
                .as_object()
                .ok_or("Deployment without selector")?;
            let tl = &o["spec"]["template"]["metadata"]["labels"];
            for (k, v) in sel {
                if &tl[k] != v {
                    return Err(format!("selector {k} does not match the pod template"));
                }
            }
            for c in o["spec"]["template"]["spec"]["containers"]
                .as_array()
                .ok_or("Deployment without containers")?
            {
                c["image"].as_str().ok_or("container without image")?;
                if c["securityContext"]["readOnlyRootFilesystem"] != json!(true) {
                    return Err("container root is not read-only".into());
                }
                if c["readinessProbe"].is_null() {
                    return Err("container without readiness probe".into());
                }
            }
        }
    }
    Ok(())
}

// === compose ===

/// A compose file for a resolved spec. The secret and secret env vars pass through from the
/// environment of whoever runs `docker compose up`.
pub fn compose(r: &Resolved, opts: &RenderOptions) -> Result<String, crate::spec::SpecError> {
    let plan = ContainerPlan::new(r, opts)?;
    let env: Vec<Value> = plan
        .env
        .iter()
        .map(|(k, v)| match v {
            Some(v) => json!(format!("{k}={}", dollar_escape(v))),
            None => json!(k),
        })
        .collect();
    let mut cmd: Vec<Value> = plan.cmd.iter().map(|c| json!(dollar_escape(c))).collect();
    if cmd.is_empty() {
        cmd.push(json!("--"));
    }
    let labels: Map<String, Value> = plan
        .labels
        .iter()
        .map(|(k, v)| (k.clone(), json!(dollar_escape(v))))
        .collect();
    let mut svc = json!({
        "image": dollar_escape(&plan.image),
        "container_name": plan.name,
        "entrypoint": [dollar_escape(&plan.entrypoint)],
        "command": cmd,
        "read_only": true,
        "tmpfs": ["/tmp"],
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges:true"],
        "environment": env,
        "ports": [plan.publish_arg()],
        "labels": labels,
        "restart": "unless-stopped",
        "healthcheck": {
            "test": [dollar_escape(&plan.entrypoint), "probe", format!("http://127.0.0.1:{CONTAINER_PORT}/readyz")],
            "interval": format!("{}s", r.health.interval.as_secs().max(1)),
            "retries": r.health.failure_threshold,
        },
    });
    if let Some(c) = plan.cpus {
        svc["cpus"] = json!(c);
    }
    if let Some(m) = plan.memory_mb {
        svc["mem_limit"] = json!(format!("{m}m"));
    }
    if let Some(p) = plan.pids {
        svc["pids_limit"] = json!(p);
    }
    if let Some(m) = &plan.bridge_mount {
        svc["volumes"] = json!([format!(
            "{}:{}:ro",
            dollar_escape(m),
            dollar_escape(&plan.entrypoint)
        )]);
    }
    let mut doc = json!({"services": {r.spec.name.clone(): svc}});
    if let Some(n) = &plan.network {
        doc["services"][&r.spec.name]["networks"] = json!([n]);
        doc["networks"] = json!({n.clone(): {"external": true}});
    }
    Ok(to_yaml(&doc))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{spec::InstanceSpec, types::InstanceTypes};

    const HOSTILE: &[&str] = &[
        "a b",
        "it's",
        "\"dq\"",
        "$(touch /tmp/mcp-managed-pwned)",
        "`touch /tmp/mcp-managed-pwned`",
        "x; touch /tmp/mcp-managed-pwned",
        "line1\nline2\r\n",
        "tab\there",
        "back\\slash",
        "${HOME}",
        "$HOME",
        "$$",
        "|&><*?!~#",
        "--privileged",
        "\u{2028}unicode\u{1F600}",
        "",
    ];

    fn hostile_spec() -> Resolved {
        let mut s = InstanceSpec::new("srv", "image");
        s.image = Some("registry.local:5000/team/srv@sha256:abc".into());
        s.command = Some("/server".into());
        s.args = HOSTILE.iter().map(|s| s.to_string()).collect();
        for (i, h) in HOSTILE.iter().enumerate() {
            s.env.insert(format!("V{i}"), h.to_string());
        }
        s.secrets
            .insert("TOKEN".into(), "vault:github/token".into());
        s.labels.insert("team".into(), "a-1".into());
        s.resources.cpus = Some(0.5);
        s.resources.memory_mb = Some(128);
        s.network.egress = false;
        InstanceTypes::default().resolve(&s).unwrap()
    }

    #[test]
    fn docker_command_round_trips_through_a_real_shell() {
        let r = hostile_spec();
        let opts = RenderOptions {
            instance: Some("alice".into()),
            bridge_from_host: Some("/opt/it's here/mcp-bridge".into()),
            ..Default::default()
        };
        let plan = ContainerPlan::new(&r, &opts).unwrap();
        let text = docker_run(&r, &opts).unwrap();
        assert!(text.contains("--read-only") && text.contains("--cap-drop ALL"));
        assert!(text.contains("--security-opt no-new-privileges"));
        assert!(text.contains("--publish 127.0.0.1::8080"));
        // The comment lines stay comments; the command replaces `docker` with printf so the shell
        // prints each word it would have passed, NUL-separated.
        let script = text.replacen("\ndocker ", "\nprintf '%s\\0' ", 1);
        let _ = std::fs::remove_file("/tmp/mcp-managed-pwned");
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(&script)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let words: Vec<String> = out
            .stdout
            .split(|b| *b == 0)
            .filter(|_| true)
            .map(|w| String::from_utf8(w.to_vec()).unwrap())
            .collect();
        let expected = &plan.docker_argv()[1..];
        assert_eq!(&words[..words.len() - 1], expected);
        assert!(!std::path::Path::new("/tmp/mcp-managed-pwned").exists());
        // The secret env var is passed by name only.
        assert!(
            expected
                .windows(2)
                .any(|w| w == ["--env", "MCP_BRIDGE_SECRET"])
        );
        assert!(expected.windows(2).any(|w| w == ["--env", "TOKEN"]));
    }

    #[test]
    fn k8s_manifest_parses_back_to_the_same_values_and_validates() {
        let r = hostile_spec();
        let opts = RenderOptions::default();
        let secrets = BTreeMap::from([("TOKEN".to_string(), "s3cr'et\n$(x)".to_string())]);
        let objects = k8s_objects(&r, &opts, "bridge-secret", &secrets).unwrap();
        validate_k8s(&objects).unwrap();
        let text = k8s_manifest(&r, &opts, "bridge-secret", &secrets).unwrap();
        let parsed: Vec<Value> = text
            .split("---\n")
            .filter(|d| !d.trim().is_empty())
            .map(|d| serde_yaml::from_str(d).unwrap())
            .collect();
        assert_eq!(parsed, objects);
        let kinds: Vec<&str> = parsed.iter().map(|o| o["kind"].as_str().unwrap()).collect();
        assert_eq!(kinds, ["Secret", "Deployment", "Service", "NetworkPolicy"]);
        let c = &parsed[1]["spec"]["template"]["spec"]["containers"][0];
        // `$` doubled so Kubernetes does not expand $(VAR); everything else verbatim.
        let args: Vec<&str> = c["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        assert_eq!(args[4], "a b");
        assert!(args.contains(&"$$(touch /tmp/mcp-managed-pwned)"));
        assert!(args.contains(&"line1\nline2\r\n"));
        assert!(args.contains(&"\u{2028}unicode\u{1F600}"));
        assert_eq!(parsed[0]["stringData"]["TOKEN"], "s3cr'et\n$(x)");
    }

    #[test]
    fn compose_parses_back_and_escapes_interpolation() {
        let r = hostile_spec();
        let text = compose(&r, &RenderOptions::default()).unwrap();
        let doc: Value = serde_yaml::from_str(&text).unwrap();
        let svc = &doc["services"]["srv"];
        assert_eq!(svc["read_only"], true);
        assert_eq!(svc["cap_drop"][0], "ALL");
        let env: Vec<&str> = svc["environment"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert!(env.contains(&"MCP_BRIDGE_SECRET"));
        assert!(env.contains(&"V10=$$HOME"));
        assert!(env.contains(&"V6=line1\nline2\r\n"));
        assert!(!text.contains("bridge-secret"));
    }

    #[test]
    fn yaml_quote_escapes_structure() {
        assert_eq!(yaml_quote("a\"b\\c\nd"), r#""a\"b\\c\nd""#);
        assert_eq!(yaml_quote("\u{2028}"), r#""\u2028""#);
        let v: String = serde_yaml::from_str(&yaml_quote("x: [y]\n- z # c")).unwrap();
        assert_eq!(v, "x: [y]\n- z # c");
    }
}
