//! Results of load runs: latency histograms, error counts, CPU per call, and the report.

use std::{collections::BTreeMap, fmt::Write as _, time::Duration};

use hdrhistogram::Histogram;
use serde_json::{Value, json};

/// A latency histogram in microseconds, 1 µs to 60 s, 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    // The bounds are constants, not input.
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("constant bounds are valid")
}

/// What one client measured.
#[derive(Debug)]
pub struct ClientTally {
    /// Latencies of the successful calls in the measured window (µs).
    pub latencies: Histogram<u64>,
    /// Failed calls in the measured window, by [`crate::client::ClientError::kind`].
    pub errors: BTreeMap<&'static str, u64>,
    /// The first error message of each kind.
    pub samples: BTreeMap<&'static str, String>,
    /// Calls made during warm-up (not counted anywhere else).
    pub warmup_calls: u64,
    /// TCP connections the client opened.
    pub connects: u64,
}

impl Default for ClientTally {
    fn default() -> Self {
        Self {
            latencies: new_histogram(),
            errors: BTreeMap::new(),
            samples: BTreeMap::new(),
            warmup_calls: 0,
            connects: 0,
        }
    }
}

impl ClientTally {
    /// Records a failure.
    pub fn error(&mut self, kind: &'static str, message: String) {
        *self.errors.entry(kind).or_default() += 1;
        self.samples.entry(kind).or_insert(message);
    }
}

/// CPU one process used during the measured window.
#[derive(Debug, Clone)]
pub struct ProcessCpu {
    /// Which process (`echo-upstream`, `hyper-proxy`, `gateway`, `load`).
    pub name: String,
    /// User + system time in the window.
    pub cpu: Duration,
}

/// One (target, concurrency) run.
#[derive(Debug)]
pub struct RunResult {
    /// The target's label (`direct`, `hyper-proxy`, `gateway`, ...).
    pub target: String,
    /// `session 2025-11-25` or `stateless 2026-07-28`.
    pub mode: String,
    /// Concurrent clients.
    pub concurrency: usize,
    /// The measured window (after warm-up).
    pub window: Duration,
    /// Latencies of all successful calls (µs).
    pub latencies: Histogram<u64>,
    /// Failed calls by kind.
    pub errors: BTreeMap<&'static str, u64>,
    /// One message per error kind.
    pub samples: BTreeMap<&'static str, String>,
    /// CPU used in the window, per process.
    pub cpu: Vec<ProcessCpu>,
    /// TCP connections opened by all clients (= concurrency when nothing was dropped).
    pub connects: u64,
}

impl RunResult {
    /// Merges the tallies of all clients.
    pub fn from_tallies(
        target: String,
        mode: String,
        concurrency: usize,
        window: Duration,
        tallies: Vec<ClientTally>,
        cpu: Vec<ProcessCpu>,
    ) -> Self {
        let mut latencies = new_histogram();
        let mut errors = BTreeMap::new();
        let mut samples = BTreeMap::new();
        let mut connects = 0;
        for tally in tallies {
            // Same bounds everywhere: adding cannot fail, except past the range, which we clamp.
            if latencies.add(&tally.latencies).is_err() {
                for v in tally.latencies.iter_recorded() {
                    latencies.saturating_record_n(v.value_iterated_to(), v.count_at_value());
                }
            }
            for (kind, n) in tally.errors {
                *errors.entry(kind).or_default() += n;
            }
            for (kind, sample) in tally.samples {
                samples.entry(kind).or_insert(sample);
            }
            connects += tally.connects;
        }
        Self {
            target,
            mode,
            concurrency,
            window,
            latencies,
            errors,
            samples,
            cpu,
            connects,
        }
    }

    /// Adds another run of the same target and concurrency (another round): latencies, errors,
    /// windows, CPU and connections add up.
    pub fn merge(&mut self, other: RunResult) {
        if self.latencies.add(&other.latencies).is_err() {
            for v in other.latencies.iter_recorded() {
                self.latencies
                    .saturating_record_n(v.value_iterated_to(), v.count_at_value());
            }
        }
        for (kind, n) in other.errors {
            *self.errors.entry(kind).or_default() += n;
        }
        for (kind, sample) in other.samples {
            self.samples.entry(kind).or_insert(sample);
        }
        self.window += other.window;
        for p in other.cpu {
            match self.cpu.iter_mut().find(|q| q.name == p.name) {
                Some(q) => q.cpu += p.cpu,
                None => self.cpu.push(p),
            }
        }
        self.connects += other.connects;
    }

    /// Successful calls.
    pub fn calls(&self) -> u64 {
        self.latencies.len()
    }

    /// Failed calls.
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    /// Successful calls per second.
    pub fn throughput(&self) -> f64 {
        let secs = self.window.as_secs_f64();
        if secs > 0.0 {
            self.calls() as f64 / secs
        } else {
            0.0
        }
    }

    /// A latency quantile in milliseconds.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        self.latencies.value_at_quantile(q) as f64 / 1000.0
    }

    /// CPU µs per successful call of process `name`, if measured.
    pub fn cpu_us_per_call(&self, name: &str) -> Option<f64> {
        let calls = self.calls();
        self.cpu
            .iter()
            .find(|p| p.name == name)
            .filter(|_| calls > 0)
            .map(|p| p.cpu.as_secs_f64() * 1e6 / calls as f64)
    }

    /// The run as JSON (for `--json`).
    pub fn to_json(&self) -> Value {
        json!({
            "target": self.target,
            "mode": self.mode,
            "concurrency": self.concurrency,
            "window_s": self.window.as_secs_f64(),
            "calls": self.calls(),
            "requests_per_s": self.throughput(),
            "p50_ms": self.quantile_ms(0.50),
            "p99_ms": self.quantile_ms(0.99),
            "p999_ms": self.quantile_ms(0.999),
            "max_ms": self.latencies.max() as f64 / 1000.0,
            "errors": self.error_count(),
            "errors_by_kind": self.errors,
            "connections": self.connects,
            "cpu_us_per_call": self.cpu.iter().map(|p| {
                (p.name.clone(), json!(self.cpu_us_per_call(&p.name)))
            }).collect::<serde_json::Map<String, Value>>(),
        })
    }
}

/// The results table, one row per run.
pub fn table(results: &[RunResult]) -> String {
    let mut names: Vec<&str> = Vec::new();
    for r in results {
        for p in &r.cpu {
            if !names.contains(&p.name.as_str()) {
                names.push(&p.name);
            }
        }
    }
    let mut out = String::new();
    let _ = write!(
        out,
        "{:<14} {:<21} {:>5} {:>10} {:>9} {:>9} {:>9} {:>7}",
        "target", "mode", "conc", "req/s", "p50 ms", "p99 ms", "p99.9 ms", "errors"
    );
    for name in &names {
        let _ = write!(out, " {:>14}", format!("{name} µs/call"));
    }
    out.push('\n');
    for r in results {
        let _ = write!(
            out,
            "{:<14} {:<21} {:>5} {:>10.0} {:>9.3} {:>9.3} {:>9.3} {:>7}",
            r.target,
            r.mode,
            r.concurrency,
            r.throughput(),
            r.quantile_ms(0.50),
            r.quantile_ms(0.99),
            r.quantile_ms(0.999),
            r.error_count()
        );
        for name in &names {
            match r.cpu_us_per_call(name) {
                Some(us) => {
                    let _ = write!(out, " {:>14.1}", us);
                }
                None => {
                    let _ = write!(out, " {:>14}", "-");
                }
            }
        }
        out.push('\n');
    }
    out
}

/// Added latency and throughput of `target` relative to the `direct` run in the same mode.
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    /// The compared target.
    pub target: String,
    /// Concurrency of both runs.
    pub concurrency: usize,
    /// p50 of `target` minus p50 of `direct`, in ms.
    pub added_p50_ms: f64,
    /// Throughput of `target` as a percentage of `direct`'s.
    pub throughput_pct: f64,
}

/// Compares every non-`baseline` run with the `baseline` run of the same mode and concurrency.
pub fn compare(results: &[RunResult], baseline: &str) -> Vec<Comparison> {
    let mut out = Vec::new();
    for r in results.iter().filter(|r| r.target != baseline) {
        let Some(base) = results
            .iter()
            .find(|b| b.target == baseline && b.mode == r.mode && b.concurrency == r.concurrency)
        else {
            continue;
        };
        let base_rps = base.throughput();
        out.push(Comparison {
            target: r.target.clone(),
            concurrency: r.concurrency,
            added_p50_ms: r.quantile_ms(0.5) - base.quantile_ms(0.5),
            throughput_pct: if base_rps > 0.0 {
                100.0 * r.throughput() / base_rps
            } else {
                0.0
            },
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(target: &str, conc: usize, p50_us: u64, calls: u64) -> RunResult {
        let mut tally = ClientTally::default();
        for _ in 0..calls {
            tally.latencies.record(p50_us).unwrap();
        }
        tally.connects = 1;
        RunResult::from_tallies(
            target.into(),
            "session 2025-11-25".into(),
            conc,
            Duration::from_secs(1),
            vec![tally, ClientTally::default()],
            vec![ProcessCpu {
                name: "gateway".into(),
                cpu: Duration::from_millis(calls),
            }],
        )
    }

    #[test]
    fn comparison_against_direct() {
        let results = vec![
            run("direct", 1, 100, 1000),
            run("hyper-proxy", 1, 150, 500),
            run("gateway", 1, 200, 250),
        ];
        let cmp = compare(&results, "direct");
        assert_eq!(cmp.len(), 2);
        assert!((cmp[0].added_p50_ms - 0.05).abs() < 0.001, "{cmp:?}");
        assert!((cmp[1].added_p50_ms - 0.10).abs() < 0.001, "{cmp:?}");
        assert!((cmp[1].throughput_pct - 25.0).abs() < 0.01, "{cmp:?}");
    }

    #[test]
    fn cpu_per_call_and_table() {
        let r = run("gateway", 32, 200, 400);
        // 400 ms of CPU over 400 calls = 1000 µs per call.
        assert!((r.cpu_us_per_call("gateway").unwrap() - 1000.0).abs() < 0.01);
        assert_eq!(r.cpu_us_per_call("proxy"), None);
        assert_eq!(r.connects, 1);
        let text = table(&[r]);
        assert!(text.contains("gateway µs/call"), "{text}");
        assert!(text.lines().nth(1).unwrap().contains("1000.0"), "{text}");
    }

    #[test]
    fn rounds_merge() {
        let mut a = run("gateway", 32, 200, 400);
        let b = run("gateway", 32, 400, 400);
        a.merge(b);
        assert_eq!(a.calls(), 800);
        assert_eq!(a.window, Duration::from_secs(2));
        assert!((a.throughput() - 400.0).abs() < 0.01);
        // 800 ms of CPU over 800 calls.
        assert!((a.cpu_us_per_call("gateway").unwrap() - 1000.0).abs() < 0.01);
        assert!(a.quantile_ms(0.25) < 0.21 && a.quantile_ms(0.75) > 0.39);
        assert_eq!(a.connects, 2);
    }

    #[test]
    fn errors_merge_by_kind() {
        let mut a = ClientTally::default();
        a.error("timeout", "timeout".into());
        let mut b = ClientTally::default();
        b.error("timeout", "later".into());
        b.error("echo-mismatch", "x".into());
        let r = RunResult::from_tallies(
            "g".into(),
            "m".into(),
            2,
            Duration::from_secs(1),
            vec![a, b],
            vec![],
        );
        assert_eq!(r.error_count(), 3);
        assert_eq!(r.errors["timeout"], 2);
        assert_eq!(r.samples["timeout"], "timeout");
        assert_eq!(r.to_json()["errors"], 3);
    }
}
