//! Run with `cargo build --release -p mcp-gateway -p mcp-gateway-benches` and then
//! `cargo run --release -p mcp-gateway-benches --bin load -- --seconds 10`.
//!
//! The end-to-end load bench. It starts, on 127.0.0.1 with free ports:
//!
//! - `echo-upstream` (a fast rmcp Streamable HTTP server with an `echo` tool),
//! - `hyper-proxy` in front of it (a bare hyper reverse-proxy hop: the yardstick),
//! - the reference gateway (`mcp-gateway --config <generated>`, one `[[server]]` with
//!   `url` = the upstream and `prefix = "never"`), plus any `--gateway-config LABEL=FILE`,
//!
//! then, for each target and each concurrency, opens that many clients (each one keep-alive
//! HTTP/1.1 connection with TCP_NODELAY; MCP 2025-11-25 sessions, or 2026-07-28 stateless requests
//! with `--stateless`), warms up, and for a fixed time calls `tools/call echo` with a ~200 byte
//! message, checking every echoed text. It prints requests/s, p50/p99/p99.9, errors and CPU µs
//! per call of each process, then the gateway's and the hop's added p50 over direct and their ratio
//! (budget: gateway <= 1.5 x hop), and throughput as a percentage of direct.
//! Everything stops by itself; every child process is killed on exit.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::{ExitCode, Stdio},
    sync::Arc,
    time::Duration,
};

use clap::Parser;
use http::{HeaderName, HeaderValue};
use mcp_gateway_benches::{
    client::{ClientError, Endpoint, McpClient, Mode},
    cpu::CpuClock,
    stats::{self, ClientTally, ProcessCpu, RunResult},
};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
    time::Instant,
};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The label of the no-proxy baseline.
const DIRECT: &str = "direct";
/// The label of the bare reverse-proxy hop.
const HOP: &str = "hyper-proxy";
/// The label of the reference gateway with the generated config.
const GATEWAY: &str = "gateway";

#[derive(Parser, Debug)]
#[command(
    name = "load",
    about = "End-to-end load bench: tools/call echo directly, through a bare hyper proxy, and through the gateway."
)]
struct Args {
    /// Measured seconds per (target, concurrency).
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Warm-up seconds before each measurement (calls made then are not counted).
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Concurrent clients, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = [1usize, 32])]
    concurrency: Vec<usize>,
    /// Targets to measure, comma-separated: `direct`, `hyper-proxy`, `gateway`, and the labels of
    /// `--gateway-config`. Default: direct, hyper-proxy, gateway and every `--gateway-config`
    /// (with `--stateless`: gateway and every `--gateway-config`).
    #[arg(long, value_delimiter = ',')]
    targets: Vec<String>,
    /// Use MCP 2026-07-28 stateless requests (per-request `_meta`, no session) instead of
    /// 2025-11-25 sessions.
    #[arg(long)]
    stateless: bool,
    /// Mix both: even-numbered clients hold 2025-11-25 sessions, odd-numbered ones make
    /// 2026-07-28 stateless calls (the soak of issue 8: `--mixed --concurrency 1000 --seconds 60`).
    #[arg(long, conflicts_with = "stateless")]
    mixed: bool,
    /// The gateway binary. Default: `mcp-gateway` next to this binary (`<target dir>/release/`).
    #[arg(long)]
    gateway: Option<PathBuf>,
    /// Another gateway target: `LABEL=FILE`, a gateway TOML config in which `{upstream_url}` is
    /// replaced by the echo upstream's URL, `{work_dir}` by the run's scratch directory and
    /// `{bench_dir}` by this package's directory; it must say `listen = "127.0.0.1:0"`.
    /// Repeatable. `benches/full-stack.toml` is every layer at once.
    #[arg(long = "gateway-config", value_name = "LABEL=FILE")]
    gateway_configs: Vec<String>,
    /// A header sent with every request, `Name: value` (e.g. `Authorization: Bearer ...`).
    /// Repeatable.
    #[arg(long = "header", value_name = "NAME: VALUE")]
    headers: Vec<String>,
    /// Size of each echo message in bytes.
    #[arg(long, default_value_t = 200)]
    message_bytes: usize,
    /// A call with no complete answer after this many milliseconds counts as an error.
    #[arg(long, default_value_t = 10_000)]
    timeout_ms: u64,
    /// Rounds: each round measures every target and concurrency for `--seconds`; the rounds'
    /// histograms, errors and CPU are added up per (target, concurrency).
    #[arg(long, default_value_t = 1)]
    rounds: usize,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// `RUST_LOG` for the gateway processes (their stderr goes to a log file in the work dir).
    #[arg(long, default_value = "warn")]
    gateway_log: String,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("load: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("load: {e}");
            ExitCode::from(2)
        }
    }
}

// === processes ===

/// A child process that is killed when dropped.
struct Peer {
    name: String,
    child: Child,
    url: String,
    log: PathBuf,
}

impl Peer {
    fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    async fn stop(mut self) {
        // SIGKILL is fine here: none of our peers holds state worth saving.
        let _ = self.child.kill().await;
    }
}

/// Starts `program args`, waits (bounded) for its `listening on URL` line and returns the URL.
async fn spawn_peer(
    name: &str,
    program: &Path,
    args: &[String],
    env: &[(&str, &str)],
    work: &Path,
) -> Result<Peer, BoxError> {
    let log = work.join(format!("{name}.log"));
    let stderr =
        std::fs::File::create(&log).map_err(|e| format!("cannot create {}: {e}", log.display()))?;
    let mut command = Command::new(program);
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .kill_on_drop(true);
    for (k, v) in env {
        command.env(k, v);
    }
    let mut child = command
        .spawn()
        .map_err(|e| format!("cannot start {} ({}): {e}", name, program.display()))?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| format!("{name}: no stdout"))?;
    let mut lines = BufReader::new(stdout).lines();
    let wait = async {
        while let Some(line) = lines.next_line().await? {
            if let Some(url) = line.trim().strip_prefix("listening on ") {
                return Ok::<_, std::io::Error>(Some(url.to_owned()));
            }
        }
        Ok(None)
    };
    let url = match tokio::time::timeout(Duration::from_secs(60), wait).await {
        Ok(Ok(Some(url))) => url,
        Ok(Ok(None)) => {
            return Err(format!("{name} exited before it listened; see {}", log.display()).into());
        }
        Ok(Err(e)) => return Err(format!("{name}: reading its stdout: {e}").into()),
        Err(_) => {
            return Err(format!(
                "{name} did not print `listening on` within 60 s; see {}",
                log.display()
            )
            .into());
        }
    };
    // Keep draining stdout so the child never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok(Peer {
        name: name.to_owned(),
        child,
        url,
        log,
    })
}

fn sibling(name: &str) -> Result<PathBuf, BoxError> {
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .ok_or("cannot find the directory of this binary")?;
    let path = dir.join(name);
    if !path.is_file() {
        return Err(format!(
            "{} not found: build it first with `cargo build --release -p mcp-gateway -p mcp-gateway-benches`",
            path.display()
        )
        .into());
    }
    Ok(path)
}

// === load ===

/// The `seq`-th message of client `client`: unique, `len` bytes (at least the unique prefix).
fn message(client: usize, seq: u64, len: usize) -> String {
    const FILL: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 ";
    let mut text = format!("client {client} call {seq}: ");
    let mut i = seq as usize;
    while text.len() < len {
        text.push(char::from(FILL[i % FILL.len()]));
        i += 7;
    }
    text
}

struct Plan {
    mode: Mode,
    mixed: bool,
    concurrency: usize,
    warmup: Duration,
    window: Duration,
    message_bytes: usize,
}

/// Runs one (target, concurrency) measurement.
async fn measure(
    label: &str,
    endpoint: Arc<Endpoint>,
    plan: &Plan,
    clocks: &[(String, CpuClock)],
) -> Result<RunResult, BoxError> {
    // Open every client first: sessions are set up outside the measurement.
    let mut connecting = tokio::task::JoinSet::new();
    for index in 0..plan.concurrency {
        let endpoint = endpoint.clone();
        let mode = if plan.mixed && index % 2 == 1 {
            Mode::Stateless
        } else {
            plan.mode
        };
        connecting.spawn(async move { McpClient::connect(endpoint, mode).await });
    }
    let mut clients = Vec::with_capacity(plan.concurrency);
    while let Some(joined) = connecting.join_next().await {
        match joined? {
            Ok(client) => clients.push(client),
            Err(e) => return Err(format!("{label}: a client could not connect: {e}").into()),
        }
    }

    let start = Instant::now();
    let measure_from = start + plan.warmup;
    let stop_at = measure_from + plan.window;
    let mut running = tokio::task::JoinSet::new();
    for (index, mut client) in clients.into_iter().enumerate() {
        let len = plan.message_bytes;
        running.spawn(async move {
            let mut tally = ClientTally::default();
            let mut seq = 0u64;
            loop {
                let began = Instant::now();
                if began >= stop_at {
                    break;
                }
                seq += 1;
                let text = message(index, seq, len);
                let outcome = client.call_echo(&text).await;
                let counted = began >= measure_from;
                match outcome {
                    Ok(latency) if counted => {
                        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
                        tally.latencies.saturating_record(us.max(1));
                    }
                    Ok(_) => tally.warmup_calls += 1,
                    Err(e) => {
                        if counted {
                            tally.error(e.kind(), e.to_string());
                        }
                        if matches!(e, ClientError::Transport(_) | ClientError::Setup(_)) {
                            // Do not spin against a peer that is gone.
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                    }
                }
            }
            tally.connects = client.connects();
            tally
        });
    }

    // CPU of each process over the measured window.
    tokio::time::sleep_until(measure_from).await;
    let before: Vec<_> = clocks.iter().map(|(_, c)| c.read().ok()).collect();
    let mut tallies = Vec::with_capacity(plan.concurrency);
    while let Some(joined) = running.join_next().await {
        tallies.push(joined?);
    }
    let window = measure_from.elapsed();
    let cpu = clocks
        .iter()
        .zip(before)
        .filter_map(|((name, clock), before)| {
            let after = clock.read().ok()?;
            Some(ProcessCpu {
                name: name.clone(),
                cpu: after.saturating_sub(before?),
            })
        })
        .collect();
    Ok(RunResult::from_tallies(
        label.to_owned(),
        if plan.mixed {
            "mixed sess+stateless".to_owned()
        } else {
            plan.mode.to_string()
        },
        plan.concurrency,
        window,
        tallies,
        cpu,
    ))
}

// === the run ===

struct Target {
    label: String,
    url: String,
    /// The process whose CPU per call is the target's cost (none for `direct`).
    pid: Option<u32>,
}

async fn run(args: Args) -> Result<bool, BoxError> {
    if !(args.seconds > 0.0 && args.seconds <= 3600.0) {
        return Err("--seconds must be in (0, 3600]".into());
    }
    if !(args.warmup >= 0.0 && args.warmup <= 600.0) {
        return Err("--warmup must be in [0, 600]".into());
    }
    if args.rounds == 0 || args.rounds > 100 {
        return Err("--rounds must be in 1..=100".into());
    }
    if args.concurrency.is_empty() || args.concurrency.iter().any(|&c| c == 0 || c > 10_000) {
        return Err("--concurrency values must be in 1..=10000".into());
    }
    let mut headers = Vec::new();
    for h in &args.headers {
        let (name, value) = h
            .split_once(':')
            .ok_or_else(|| format!("--header `{h}`: expected `Name: value`"))?;
        let name = HeaderName::try_from(name.trim())
            .map_err(|e| format!("--header `{h}`: bad name: {e}"))?;
        let value = HeaderValue::try_from(value.trim())
            .map_err(|e| format!("--header `{h}`: bad value: {e}"))?;
        headers.push((name, value));
    }
    let mut extra = Vec::new();
    for spec in &args.gateway_configs {
        let (label, file) = spec
            .split_once('=')
            .ok_or_else(|| format!("--gateway-config `{spec}`: expected LABEL=FILE"))?;
        if [DIRECT, HOP, GATEWAY].contains(&label) || label.is_empty() {
            return Err(format!("--gateway-config `{spec}`: choose another label").into());
        }
        let template = std::fs::read_to_string(file)
            .map_err(|e| format!("--gateway-config `{spec}`: cannot read {file}: {e}"))?;
        extra.push((label.to_owned(), template));
    }
    let wanted: Vec<String> = if args.targets.is_empty() {
        let mut t: Vec<String> = if args.stateless {
            vec![GATEWAY.into()]
        } else {
            vec![DIRECT.into(), HOP.into(), GATEWAY.into()]
        };
        t.extend(extra.iter().map(|(l, _)| l.clone()));
        t
    } else {
        args.targets.clone()
    };
    for t in &wanted {
        if ![DIRECT, HOP, GATEWAY].contains(&t.as_str()) && !extra.iter().any(|(l, _)| l == t) {
            return Err(format!("--targets: unknown target `{t}`").into());
        }
    }
    let work = std::env::temp_dir().join(format!("mcp-gateway-load-{}", std::process::id()));
    std::fs::create_dir_all(&work).map_err(|e| format!("cannot create {}: {e}", work.display()))?;
    let result = run_in(&args, &wanted, &extra, headers, &work).await;
    if result.is_ok() {
        let _ = std::fs::remove_dir_all(&work);
    } else {
        eprintln!("load: logs kept in {}", work.display());
    }
    result
}

async fn run_in(
    args: &Args,
    wanted: &[String],
    extra: &[(String, String)],
    headers: Vec<(HeaderName, HeaderValue)>,
    work: &Path,
) -> Result<bool, BoxError> {
    let wants = |t: &str| wanted.iter().any(|w| w == t);
    let mut peers: Vec<Peer> = Vec::new();
    let upstream = spawn_peer(
        "echo-upstream",
        &sibling("echo-upstream")?,
        &["--port".into(), "0".into()],
        &[],
        work,
    )
    .await?;
    let upstream_url = upstream.url.clone();
    let upstream_pid = upstream.pid();
    peers.push(upstream);

    let mut targets: Vec<Target> = Vec::new();
    if wants(DIRECT) {
        targets.push(Target {
            label: DIRECT.into(),
            url: upstream_url.clone(),
            pid: None,
        });
    }
    if wants(HOP) {
        let upstream_base = upstream_url.trim_end_matches("/mcp").to_owned();
        let proxy = spawn_peer(
            HOP,
            &sibling("hyper-proxy")?,
            &[
                "--upstream".into(),
                upstream_base,
                "--port".into(),
                "0".into(),
            ],
            &[],
            work,
        )
        .await?;
        targets.push(Target {
            label: HOP.into(),
            url: format!("{}/mcp", proxy.url),
            pid: proxy.pid(),
        });
        peers.push(proxy);
    }
    let mut gateway_configs: Vec<(String, String)> = Vec::new();
    if wants(GATEWAY) {
        gateway_configs.push((
            GATEWAY.into(),
            format!(
                "# Generated by the load bench.\nlisten = \"127.0.0.1:0\"\nprefix = \"never\"\n\n[[server]]\nname = \"echo\"\nurl = \"{upstream_url}\"\n"
            ),
        ));
    }
    for (label, template) in extra {
        if wants(label) {
            gateway_configs.push((
                label.clone(),
                template
                    .replace("{upstream_url}", &upstream_url)
                    .replace("{work_dir}", &work.display().to_string())
                    .replace("{bench_dir}", env!("CARGO_MANIFEST_DIR")),
            ));
        }
    }
    let gateway_bin = match (&args.gateway, gateway_configs.is_empty()) {
        (_, true) => PathBuf::new(),
        (Some(p), false) => p.clone(),
        (None, false) => sibling("mcp-gateway")?,
    };
    for (label, config) in gateway_configs {
        let path = work.join(format!("{label}.toml"));
        std::fs::write(&path, config)
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        let peer = spawn_peer(
            &label,
            &gateway_bin,
            &["--config".into(), path.display().to_string()],
            &[("RUST_LOG", args.gateway_log.as_str())],
            work,
        )
        .await?;
        targets.push(Target {
            label: label.clone(),
            url: peer.url.clone(),
            pid: peer.pid(),
        });
        peers.push(peer);
    }
    // Measure in the order the user named the targets.
    targets.sort_by_key(|t| wanted.iter().position(|w| *w == t.label));

    let mode = if args.stateless {
        Mode::Stateless
    } else {
        Mode::Session
    };
    let load = uptime_load();
    let mode_label = if args.mixed {
        "mixed: 2025-11-25 sessions and 2026-07-28 stateless calls".to_owned()
    } else {
        mode.to_string()
    };
    println!(
        "mcp-gateway load bench: tools/call echo, {} byte messages, {mode_label}, {} round(s) of {}s warm-up + {}s per run, {} CPU(s), load average {load}",
        args.message_bytes,
        args.rounds,
        args.warmup,
        args.seconds,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    );
    for peer in &peers {
        println!(
            "  {:<14} pid {:>7}  {}  (log: {})",
            peer.name,
            peer.pid().map_or_else(|| "-".into(), |p| p.to_string()),
            peer.url,
            peer.log.display()
        );
    }
    println!();

    // Resolve every endpoint once; then measure in rounds (each round visits every target and
    // concurrency), so that drift in a shared machine's load hits every target alike.
    let mut prepared = Vec::with_capacity(targets.len());
    for target in &targets {
        let mut endpoint = Endpoint::resolve(&target.url)
            .await?
            .timeout(Duration::from_millis(args.timeout_ms));
        for (name, value) in &headers {
            endpoint = endpoint.header(name.clone(), value.clone());
        }
        let mut clocks = vec![("load".to_owned(), CpuClock::for_self())];
        if let Some(pid) = upstream_pid {
            clocks.push(("upstream".to_owned(), CpuClock::for_pid(pid)));
        }
        if let Some(pid) = target.pid {
            clocks.push(("target".to_owned(), CpuClock::for_pid(pid)));
        }
        prepared.push((target, Arc::new(endpoint), clocks));
    }
    let mut results: Vec<RunResult> = Vec::new();
    for round in 1..=args.rounds {
        for (target, endpoint, clocks) in &prepared {
            for &concurrency in &args.concurrency {
                let plan = Plan {
                    mode,
                    mixed: args.mixed,
                    concurrency,
                    warmup: Duration::from_secs_f64(args.warmup),
                    window: Duration::from_secs_f64(args.seconds),
                    message_bytes: args.message_bytes,
                };
                let result = measure(&target.label, endpoint.clone(), &plan, clocks).await?;
                eprintln!(
                    "  round {round}/{}  {:<14} x{:<4} {:>8.0} req/s  p50 {:.3} ms  errors {}",
                    args.rounds,
                    result.target,
                    result.concurrency,
                    result.throughput(),
                    result.quantile_ms(0.5),
                    result.error_count()
                );
                match results
                    .iter_mut()
                    .find(|r| r.target == result.target && r.concurrency == result.concurrency)
                {
                    Some(total) => total.merge(result),
                    None => results.push(result),
                }
            }
        }
    }
    // Peak memory of every process, and what the audit layer says it lost (targets with an
    // `[audit]` section; the scrape is over before the peers stop).
    let mut footprint = Vec::new();
    for peer in &peers {
        let Some(pid) = peer.pid() else { continue };
        let peak = peak_rss_mib(pid);
        let audit = if peer.name != "echo-upstream" && peer.name != HOP {
            audit_losses(&peer.url).await
        } else {
            None
        };
        footprint.push((peer.name.clone(), peak, audit));
    }
    for peer in peers {
        peer.stop().await;
    }

    println!();
    print!("{}", stats::table(&results));
    println!(
        "(µs/call: CPU time of that process per successful call in the window; `target` is the measured hop's own process: hyper-proxy or the gateway)"
    );
    let mut clean = true;
    for r in &results {
        if r.error_count() > 0 {
            clean = false;
            println!("errors in {} x{}: {:?}", r.target, r.concurrency, r.errors);
            for (kind, sample) in &r.samples {
                println!("  first {kind}: {sample}");
            }
        }
        let expected = (r.concurrency * args.rounds) as u64;
        if r.connects != expected {
            println!(
                "note: {} x{} opened {} connections where {expected} were expected (the server closed some)",
                r.target, r.concurrency, r.connects
            );
        }
    }
    println!();
    for (name, peak, audit) in &footprint {
        let peak = peak.map_or_else(|| "?".to_owned(), |m| format!("{m:.1} MiB"));
        match audit {
            Some((written, dropped, errors)) => {
                println!(
                    "  {name:<14} peak RSS {peak}; audit: {written} events written, {dropped} dropped, {errors} write errors"
                );
                if *dropped > 0 || *errors > 0 {
                    clean = false;
                }
            }
            None => println!("  {name:<14} peak RSS {peak}"),
        }
    }
    let verdicts = summarize(&results, wanted);
    if let Some(path) = &args.json {
        let doc = serde_json::json!({
            "mode": mode_label,
            "seconds": args.seconds,
            "rounds": args.rounds,
            "warmup": args.warmup,
            "message_bytes": args.message_bytes,
            "load_average_at_start": load,
            "runs": results.iter().map(RunResult::to_json).collect::<Vec<_>>(),
            "verdicts": verdicts,
        });
        std::fs::write(path, serde_json::to_vec_pretty(&doc)?)
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    Ok(clean)
}

/// Prints added p50 and throughput relative to direct, and the budget checks. Returns them as
/// JSON.
fn summarize(results: &[RunResult], wanted: &[String]) -> serde_json::Value {
    let comparisons = stats::compare(results, DIRECT);
    let mut verdicts = serde_json::Map::new();
    if comparisons.is_empty() {
        return verdicts.into();
    }
    println!();
    println!("relative to direct:");
    let mut by_conc: BTreeMap<usize, Vec<&stats::Comparison>> = BTreeMap::new();
    for c in &comparisons {
        by_conc.entry(c.concurrency).or_default().push(c);
    }
    for (conc, list) in &by_conc {
        for c in list {
            println!(
                "  x{conc:<4} {:<14} added p50 {:+.3} ms   throughput {:.1}% of direct",
                c.target, c.added_p50_ms, c.throughput_pct
            );
        }
        let hop = list.iter().find(|c| c.target == HOP);
        for c in list
            .iter()
            .filter(|c| c.target != HOP && wanted.contains(&c.target))
        {
            if let Some(hop) = hop {
                let ratio = if hop.added_p50_ms > 0.0 {
                    c.added_p50_ms / hop.added_p50_ms
                } else {
                    f64::INFINITY
                };
                let ok = c.added_p50_ms <= 1.5 * hop.added_p50_ms;
                println!(
                    "  x{conc:<4} {} added p50 / hop added p50 = {ratio:.2} (budget <= 1.50): {}",
                    c.target,
                    if ok { "within budget" } else { "OVER budget" }
                );
                verdicts.insert(
                    format!("{}_x{conc}_added_p50_over_hop", c.target),
                    serde_json::json!({ "ratio": ratio, "within_budget": ok }),
                );
            }
            if *conc == 1 {
                let ok = c.added_p50_ms <= 0.11;
                println!(
                    "  x1    {} added p50 {:.3} ms (budget <= 0.110 ms): {}",
                    c.target,
                    c.added_p50_ms,
                    if ok { "within budget" } else { "OVER budget" }
                );
                verdicts.insert(
                    format!("{}_x1_added_p50_ms", c.target),
                    serde_json::json!({ "value": c.added_p50_ms, "within_budget": ok }),
                );
            }
            if *conc == 32 {
                let ok = c.throughput_pct >= 55.0;
                println!(
                    "  x32   {} throughput {:.1}% of direct (budget >= 55%): {}",
                    c.target,
                    c.throughput_pct,
                    if ok { "within budget" } else { "OVER budget" }
                );
                verdicts.insert(
                    format!("{}_x32_throughput_pct", c.target),
                    serde_json::json!({ "value": c.throughput_pct, "within_budget": ok }),
                );
            }
        }
    }
    verdicts.into()
}

/// The peak resident set of a process (`VmHWM` in `/proc/<pid>/status`), in MiB.
fn peak_rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib / 1024.0)
}

/// `(written, dropped, errors)` from a gateway's `/metrics` audit counters, when it has them.
async fn audit_losses(mcp_url: &str) -> Option<(u64, u64, u64)> {
    let base = mcp_url.strip_prefix("http://")?;
    let authority = base.split('/').next()?;
    let mut stream = tokio::net::TcpStream::connect(authority).await.ok()?;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream
        .write_all(
            format!("GET /metrics HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
        .ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).await.ok()?;
    let sum = |name: &str| -> Option<u64> {
        let values: Vec<u64> = text
            .lines()
            .filter(|l| l.starts_with(name))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .map(|v| v as u64)
            .collect();
        (!values.is_empty()).then(|| values.iter().sum())
    };
    Some((
        sum("mcp_audit_sink_written_total")?,
        sum("mcp_audit_sink_dropped_total").unwrap_or(0),
        sum("mcp_audit_sink_errors_total").unwrap_or(0),
    ))
}

/// The 1-minute load average (`/proc/loadavg`), or `?`.
fn uptime_load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|t| t.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_unique_and_sized() {
        let a = message(3, 17, 200);
        let b = message(3, 18, 200);
        assert_eq!(a.len(), 200);
        assert_ne!(a, b);
        assert!(a.starts_with("client 3 call 17: "));
        // The unique prefix is kept even when it is longer than asked.
        assert_eq!(message(12, 12345, 4), "client 12 call 12345: ");
    }
}
