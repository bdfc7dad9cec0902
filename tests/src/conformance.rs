//! Running `@modelcontextprotocol/conformance` (server mode) against a URL and reading its
//! per-scenario results (`checks.json` in the output directory) into a [`Report`].

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::{ChildGuard, Error, Result, node, node_module, peers_dir, scratch_dir};

/// The suite's entry point inside `tests/peers/node_modules`.
pub const SUITE_JS: &str = "@modelcontextprotocol/conformance/dist/index.js";
/// Every server scenario of the suite: the fixture passes all of them, for both spec versions
/// the suite knows (2025-06-18: 26 scenarios; 2025-11-25: all 32).
pub const FIXTURE_PASSES: &[&str] = &[
    "completion-complete",
    "dns-rebinding-protection",
    "elicitation-sep1034-defaults",
    "elicitation-sep1330-enums",
    "json-schema-2020-12",
    "logging-set-level",
    "ping",
    "prompts-get-embedded-resource",
    "prompts-get-simple",
    "prompts-get-with-args",
    "prompts-get-with-image",
    "prompts-list",
    "resources-list",
    "resources-read-binary",
    "resources-read-text",
    "resources-subscribe",
    "resources-templates-read",
    "resources-unsubscribe",
    "server-initialize",
    "server-sse-multiple-streams",
    "server-sse-polling",
    "tools-call-audio",
    "tools-call-elicitation",
    "tools-call-embedded-resource",
    "tools-call-error",
    "tools-call-image",
    "tools-call-mixed-content",
    "tools-call-sampling",
    "tools-call-simple-text",
    "tools-call-with-logging",
    "tools-call-with-progress",
    "tools-list",
];

/// How long one suite run may take before it is killed.
pub const RUN_TIMEOUT: Duration = Duration::from_secs(600);

/// Which scenarios to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// `--suite`: `all` (default here: active + pending), `active` or `pending`.
    pub suite: String,
    /// `--spec-version`: only scenarios of this spec version (cumulative), or all.
    pub spec_version: Option<String>,
    /// `--scenario`: a single scenario.
    pub scenario: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            suite: "all".to_owned(),
            spec_version: None,
            scenario: None,
        }
    }
}

/// Status of one check, as the suite reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Status {
    /// `SUCCESS`.
    Success,
    /// `FAILURE`.
    Failure,
    /// `WARNING` (a SHOULD not met; not a failure).
    Warning,
    /// `INFO` (a trace entry).
    Info,
    /// `SKIPPED` or anything else.
    Other,
}

impl Status {
    fn parse(status: &str) -> Self {
        match status {
            "SUCCESS" => Self::Success,
            "FAILURE" => Self::Failure,
            "WARNING" => Self::Warning,
            "INFO" => Self::Info,
            _ => Self::Other,
        }
    }
}

/// One check of a scenario.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// The check's id, e.g. `tools-call-simple-text`.
    pub id: String,
    /// Its status.
    pub status: Status,
    /// The suite's error message, if any.
    pub message: Option<String>,
}

/// The results of one scenario.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scenario {
    /// Spec versions the suite lists the scenario under (e.g. `2025-06-18`, `2025-11-25`).
    pub spec_versions: Vec<String>,
    /// Checks with status SUCCESS.
    pub passed: usize,
    /// Checks with status FAILURE.
    pub failed: usize,
    /// Checks with status WARNING.
    pub warnings: usize,
    /// All checks (including INFO trace entries).
    pub checks: Vec<Check>,
    /// Whether a result file was found (a scenario that crashed the runner has none).
    pub ran: bool,
}

impl Scenario {
    /// Ran, at least one check passed and none failed.
    pub fn is_pass(&self) -> bool {
        self.ran && self.failed == 0 && self.passed > 0
    }

    /// The failure messages.
    pub fn failures(&self) -> Vec<String> {
        self.checks
            .iter()
            .filter(|check| check.status == Status::Failure)
            .map(|check| format!("{}: {}", check.id, check.message.as_deref().unwrap_or("")))
            .collect()
    }
}

/// Results of one suite run, by scenario name.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Every server scenario that was selected, by name.
    pub scenarios: BTreeMap<String, Scenario>,
    /// Where the suite wrote its result files.
    pub output_dir: PathBuf,
    /// The suite's stdout (its summary).
    pub stdout: String,
}

impl Report {
    /// Names of the scenarios that passed.
    pub fn passed(&self) -> BTreeSet<String> {
        self.scenarios
            .iter()
            .filter(|(_, scenario)| scenario.is_pass())
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// Names of the scenarios that did not pass.
    pub fn failed(&self) -> BTreeSet<String> {
        self.scenarios
            .iter()
            .filter(|(_, scenario)| !scenario.is_pass())
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// Scenarios listed under `spec_version`.
    pub fn for_spec_version<'a>(
        &'a self,
        spec_version: &'a str,
    ) -> impl Iterator<Item = (&'a String, &'a Scenario)> + 'a {
        self.scenarios
            .iter()
            .filter(move |(_, scenario)| scenario.spec_versions.iter().any(|v| v == spec_version))
    }

    /// Every spec version some scenario is listed under.
    pub fn spec_versions(&self) -> BTreeSet<String> {
        self.scenarios
            .values()
            .flat_map(|scenario| scenario.spec_versions.iter().cloned())
            .collect()
    }

    /// (passed checks, failed checks) over all scenarios.
    pub fn check_totals(&self) -> (usize, usize) {
        self.scenarios
            .values()
            .fold((0, 0), |(passed, failed), scenario| {
                (passed + scenario.passed, failed + scenario.failed)
            })
    }

    /// A Markdown table: scenario, spec versions, result, checks, and per-version totals.
    pub fn table(&self) -> String {
        let mut out = String::from(
            "| scenario | spec versions | result | checks passed/failed/warnings |\n|---|---|---|---|\n",
        );
        for (name, scenario) in &self.scenarios {
            let result = if scenario.is_pass() {
                "pass"
            } else if scenario.ran {
                "FAIL"
            } else {
                "NOT RUN"
            };
            let _ = writeln!(
                out,
                "| {name} | {} | {result} | {}/{}/{} |",
                scenario.spec_versions.join(", "),
                scenario.passed,
                scenario.failed,
                scenario.warnings
            );
        }
        out.push('\n');
        for version in self.spec_versions() {
            let (total, passing) =
                self.for_spec_version(&version)
                    .fold((0, 0), |(total, passing), (_, scenario)| {
                        (total + 1, passing + usize::from(scenario.is_pass()))
                    });
            let _ = writeln!(out, "{version}: {passing}/{total} scenarios pass");
        }
        let (passed, failed) = self.check_totals();
        let _ = writeln!(
            out,
            "all: {}/{} scenarios pass; {passed} checks passed, {failed} failed",
            self.passed().len(),
            self.scenarios.len()
        );
        out
    }
}

/// Runs every server scenario (`--suite all`) against `url`.
pub fn run(url: &str) -> Result<Report> {
    run_with(url, &Options::default())
}

/// Runs the scenarios `options` selects against `url`.
pub fn run_with(url: &str, options: &Options) -> Result<Report> {
    let listed = list_server_scenarios()?;
    let output_dir = scratch_dir("conformance")?;
    let mut command = suite_command()?;
    command
        .args(["server", "--url", url, "--suite", &options.suite, "-o"])
        .arg(&output_dir);
    if let Some(version) = &options.spec_version {
        command.args(["--spec-version", version]);
    }
    if let Some(scenario) = &options.scenario {
        command.args(["--scenario", scenario]);
    }
    let stdout_path = output_dir.join("suite.stdout");
    let stdout = std::fs::File::create(&stdout_path).map_err(crate::io("creating suite.stdout"))?;
    let stderr = std::fs::File::create(output_dir.join("suite.stderr"))
        .map_err(crate::io("creating suite.stderr"))?;
    command.stdin(Stdio::null()).stdout(stdout).stderr(stderr);
    let mut child = ChildGuard::spawn("conformance suite", &mut command)?;
    // The suite exits non-zero when a check fails: the result files say which.
    child.wait_timeout(RUN_TIMEOUT)?;
    let stdout = std::fs::read_to_string(&stdout_path).unwrap_or_default();
    let selected: Vec<(String, Vec<String>)> = listed
        .into_iter()
        .filter(|(name, versions)| {
            options.scenario.as_ref().is_none_or(|only| only == name)
                && options
                    .spec_version
                    .as_ref()
                    .is_none_or(|version| versions.iter().any(|v| v == version))
        })
        .collect();
    let mut report = parse_output_dir(&output_dir, &selected)?;
    // `list` does not say which scenarios are pending: outside `--suite all`, a listed scenario
    // without results was left out by the suite, not broken, so it is dropped from the report.
    if options.suite != "all" {
        report.scenarios.retain(|_, scenario| scenario.ran);
    }
    report.stdout = stdout;
    Ok(report)
}

fn suite_command() -> Result<Command> {
    let mut command = Command::new(node()?);
    command.arg(node_module(SUITE_JS)?).current_dir(peers_dir());
    Ok(command)
}

/// The suite's server scenarios and their spec versions (`list`).
pub fn list_server_scenarios() -> Result<Vec<(String, Vec<String>)>> {
    let output = suite_command()?
        .arg("list")
        .stdin(Stdio::null())
        .output()
        .map_err(crate::io("running the conformance suite's `list`"))?;
    if !output.status.success() {
        return Err(Error::Peer(format!(
            "conformance list failed: {}",
            String::from_utf8_lossy(&output.stderr)
        )));
    }
    Ok(parse_list(&String::from_utf8_lossy(&output.stdout)))
}

/// Parses `list` output: the `- name [v1,v2]` lines of the "Server scenarios" section.
pub fn parse_list(text: &str) -> Vec<(String, Vec<String>)> {
    let mut in_server = false;
    let mut scenarios = Vec::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with("Server scenarios") {
            in_server = true;
            continue;
        }
        if trimmed.ends_with("scenarios (test against a client):")
            || trimmed.starts_with("Client scenarios")
        {
            in_server = false;
            continue;
        }
        if !in_server {
            continue;
        }
        let Some(entry) = trimmed.strip_prefix("- ") else {
            continue;
        };
        let (name, versions) = match entry.split_once(' ') {
            Some((name, rest)) => {
                let versions = rest
                    .trim()
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .split(',')
                    .map(str::trim)
                    .filter(|v| !v.is_empty())
                    .map(str::to_owned)
                    .collect();
                (name, versions)
            }
            None => (entry, Vec::new()),
        };
        scenarios.push((name.to_owned(), versions));
    }
    scenarios
}

/// Reads `server-<scenario>-<timestamp>/checks.json` files under `dir` for the `expected`
/// scenarios; scenarios without a file are reported as not run.
pub fn parse_output_dir(dir: &Path, expected: &[(String, Vec<String>)]) -> Result<Report> {
    let mut report = Report {
        output_dir: dir.to_path_buf(),
        ..Report::default()
    };
    for (name, versions) in expected {
        report.scenarios.insert(
            name.clone(),
            Scenario {
                spec_versions: versions.clone(),
                ..Scenario::default()
            },
        );
    }
    let entries =
        std::fs::read_dir(dir).map_err(crate::io(format!("reading {}", dir.display())))?;
    for entry in entries.flatten() {
        let file_name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = file_name.strip_prefix("server-") else {
            continue;
        };
        // The longest expected name followed by `-<timestamp>`.
        let Some(name) = expected
            .iter()
            .map(|(name, _)| name)
            .filter(|name| {
                rest.strip_prefix(name.as_str()).is_some_and(|tail| {
                    tail.starts_with('-') && tail[1..].starts_with(|c: char| c.is_ascii_digit())
                })
            })
            .max_by_key(|name| name.len())
        else {
            continue;
        };
        let path = entry.path().join("checks.json");
        let text = std::fs::read_to_string(&path)
            .map_err(crate::io(format!("reading {}", path.display())))?;
        let checks: Value = serde_json::from_str(&text)
            .map_err(|error| Error::Peer(format!("{}: not JSON: {error}", path.display())))?;
        let scenario = report.scenarios.entry(name.clone()).or_default();
        scenario.ran = true;
        for check in checks.as_array().into_iter().flatten() {
            let status = Status::parse(check["status"].as_str().unwrap_or(""));
            match status {
                Status::Success => scenario.passed += 1,
                Status::Failure => scenario.failed += 1,
                Status::Warning => scenario.warnings += 1,
                Status::Info | Status::Other => {}
            }
            scenario.checks.push(Check {
                id: check["id"].as_str().unwrap_or("").to_owned(),
                status,
                message: check["errorMessage"].as_str().map(str::to_owned),
            });
        }
    }
    Ok(report)
}

// === client mode ===

/// One client scenario's results (`<output>/<scenario>-<timestamp>/`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientScenario {
    /// The checks, counted like a server scenario's.
    pub result: Scenario,
    /// What the client printed on stdout.
    pub stdout: String,
    /// What the client printed on stderr.
    pub stderr: String,
}

impl ClientScenario {
    /// The suite's own verdict: ran, some check passed, none failed, no warnings.
    pub fn is_pass(&self) -> bool {
        self.result.is_pass() && self.result.warnings == 0
    }

    /// The ids of the checks that passed, in order, without repeats.
    pub fn passed_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = Vec::new();
        for check in &self.result.checks {
            if check.status == Status::Success && !ids.contains(&check.id) {
                ids.push(check.id.clone());
            }
        }
        ids
    }

    /// The failed and warning checks with their messages.
    pub fn problems(&self) -> Vec<String> {
        self.result
            .checks
            .iter()
            .filter(|c| matches!(c.status, Status::Failure | Status::Warning))
            .map(|c| {
                format!(
                    "{} ({:?}): {}",
                    c.id,
                    c.status,
                    c.message.as_deref().unwrap_or("")
                )
            })
            .collect()
    }
}

/// Results of client-mode suite runs, by scenario name (`auth/metadata-default`).
#[derive(Debug, Clone, Default)]
pub struct ClientReport {
    /// Every scenario that left a result directory.
    pub scenarios: BTreeMap<String, ClientScenario>,
    /// Where the suite wrote its result files.
    pub output_dir: PathBuf,
    /// The suites' stdout (their summaries).
    pub stdout: String,
}

impl ClientReport {
    /// Names of the scenarios that passed.
    pub fn passed(&self) -> BTreeSet<String> {
        self.scenarios
            .iter()
            .filter(|(_, s)| s.is_pass())
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// A Markdown table: scenario, spec versions, result, check counts, the checks that passed.
    pub fn table(&self, versions: &BTreeMap<String, Vec<String>>) -> String {
        let mut out = String::from(
            "| scenario | spec versions | result | checks passed/failed/warnings | checks passed |\n|---|---|---|---|---|\n",
        );
        for (name, s) in &self.scenarios {
            let _ = writeln!(
                out,
                "| {name} | {} | {} | {}/{}/{} | {} |",
                versions.get(name).map(|v| v.join(", ")).unwrap_or_default(),
                if s.is_pass() { "pass" } else { "FAIL" },
                s.result.passed,
                s.result.failed,
                s.result.warnings,
                s.passed_ids().join(", ")
            );
        }
        let _ = writeln!(
            out,
            "\n{}/{} scenarios pass",
            self.passed().len(),
            self.scenarios.len()
        );
        out
    }
}

/// Runs client-mode suites (`client --command COMMAND --suite S`, one run per suite, each
/// running its scenarios in parallel) and reads every scenario's result directory.
pub fn run_client(command: &str, suites: &[&str]) -> Result<ClientReport> {
    let output_dir = scratch_dir("conformance-client")?;
    let mut stdout = String::new();
    for suite in suites {
        let mut cmd = suite_command()?;
        cmd.args(["client", "--command", command, "--suite", suite, "-o"])
            .arg(&output_dir);
        let out_path = output_dir.join(format!("suite-{suite}.stdout"));
        let out = std::fs::File::create(&out_path).map_err(crate::io("creating suite stdout"))?;
        let err = std::fs::File::create(output_dir.join(format!("suite-{suite}.stderr")))
            .map_err(crate::io("creating suite stderr"))?;
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        let mut child = ChildGuard::spawn(format!("conformance client suite {suite}"), &mut cmd)?;
        // Non-zero when a check fails or warns: the result files say which.
        child.wait_timeout(RUN_TIMEOUT)?;
        stdout.push_str(&std::fs::read_to_string(&out_path).unwrap_or_default());
    }
    parse_client_dir(&output_dir).map(|mut report| {
        report.stdout = stdout;
        report
    })
}

/// The client scenarios and their spec versions (`list --client`).
pub fn list_client_scenarios() -> Result<BTreeMap<String, Vec<String>>> {
    let output = suite_command()?
        .args(["list", "--client"])
        .stdin(Stdio::null())
        .output()
        .map_err(crate::io("running the conformance suite's `list --client`"))?;
    let text =
        String::from_utf8_lossy(&output.stdout).replace("Client scenarios", "Server scenarios");
    Ok(parse_list(&text).into_iter().collect())
}

/// Reads `<dir>/<group>/<name>-<timestamp>/{checks.json,stdout.txt,stderr.txt}`.
pub fn parse_client_dir(dir: &Path) -> Result<ClientReport> {
    // `2025-11-21T09-08-36-742Z`, after a `-`.
    const STAMP: usize = 25;
    let mut report = ClientReport {
        output_dir: dir.to_path_buf(),
        ..ClientReport::default()
    };
    let groups = std::fs::read_dir(dir).map_err(crate::io(format!("reading {}", dir.display())))?;
    for group in groups.flatten().filter(|g| g.path().is_dir()) {
        let group_name = group.file_name().to_string_lossy().into_owned();
        let entries = std::fs::read_dir(group.path())
            .map_err(crate::io(format!("reading {}", group.path().display())))?;
        for entry in entries.flatten() {
            let file_name = entry.file_name().to_string_lossy().into_owned();
            let path = entry.path().join("checks.json");
            if file_name.len() <= STAMP || !path.is_file() {
                continue;
            }
            let name = format!("{group_name}/{}", &file_name[..file_name.len() - STAMP]);
            let text = std::fs::read_to_string(&path)
                .map_err(crate::io(format!("reading {}", path.display())))?;
            let checks: Value = serde_json::from_str(&text)
                .map_err(|error| Error::Peer(format!("{}: not JSON: {error}", path.display())))?;
            let mut scenario = ClientScenario {
                stdout: std::fs::read_to_string(entry.path().join("stdout.txt"))
                    .unwrap_or_default(),
                stderr: std::fs::read_to_string(entry.path().join("stderr.txt"))
                    .unwrap_or_default(),
                ..ClientScenario::default()
            };
            scenario.result.ran = true;
            for check in checks.as_array().into_iter().flatten() {
                let status = Status::parse(check["status"].as_str().unwrap_or(""));
                match status {
                    Status::Success => scenario.result.passed += 1,
                    Status::Failure => scenario.result.failed += 1,
                    Status::Warning => scenario.result.warnings += 1,
                    Status::Info | Status::Other => {}
                }
                scenario.result.checks.push(Check {
                    id: check["id"].as_str().unwrap_or("").to_owned(),
                    status,
                    message: check["errorMessage"]
                        .as_str()
                        .or(check["description"].as_str())
                        .map(str::to_owned),
                });
            }
            report.scenarios.insert(name, scenario);
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_list_output() {
        let text = "Server scenarios (test against a server):\n  - ping [2025-06-18,2025-11-25]\n  - dns-rebinding-protection [2025-11-25]\n\nClient scenarios (test against a client):\n  - initialize [2025-06-18,2025-11-25]\n";
        let list = parse_list(text);
        assert_eq!(
            list,
            vec![
                (
                    "ping".to_owned(),
                    vec!["2025-06-18".to_owned(), "2025-11-25".to_owned()]
                ),
                (
                    "dns-rebinding-protection".to_owned(),
                    vec!["2025-11-25".to_owned()]
                ),
            ]
        );
    }

    #[test]
    fn parses_result_dirs_and_missing_scenarios() {
        let dir = scratch_dir("parse-test").expect("dir");
        let write = |sub: &str, body: &str| {
            std::fs::create_dir_all(dir.join(sub)).expect("mkdir");
            std::fs::write(dir.join(sub).join("checks.json"), body).expect("write");
        };
        write(
            "server-server-sse-polling-2026-11-21T09-08-36-742Z",
            r#"[{"id":"a","status":"SUCCESS"},{"id":"b","status":"WARNING"},{"id":"c","status":"INFO"}]"#,
        );
        write(
            "server-tools-list-2026-11-21T09-08-36-742Z",
            r#"[{"id":"tools-list","status":"FAILURE","errorMessage":"Missing tools array"}]"#,
        );
        let expected = vec![
            (
                "server-sse-polling".to_owned(),
                vec!["2025-11-25".to_owned()],
            ),
            ("tools-list".to_owned(), vec!["2025-06-18".to_owned()]),
            ("ping".to_owned(), vec!["2025-06-18".to_owned()]),
        ];
        let report = parse_output_dir(&dir, &expected).expect("parsed");
        assert_eq!(
            report.passed(),
            BTreeSet::from(["server-sse-polling".to_owned()])
        );
        assert_eq!(
            report.failed(),
            BTreeSet::from(["ping".to_owned(), "tools-list".to_owned()])
        );
        let polling = &report.scenarios["server-sse-polling"];
        assert_eq!(
            (polling.passed, polling.failed, polling.warnings),
            (1, 0, 1)
        );
        assert_eq!(
            report.scenarios["tools-list"].failures(),
            vec!["tools-list: Missing tools array"]
        );
        assert!(!report.scenarios["ping"].ran);
        assert!(
            report
                .table()
                .contains("| ping | 2025-06-18 | NOT RUN | 0/0/0 |")
        );
    }
}
