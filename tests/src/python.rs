//! Running the Python SDK client scripts in `tests/py` and reading their JSON output.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::{ChildGuard, Error, Result, repo_root};

/// How long a script may run before it is killed.
pub const SCRIPT_TIMEOUT: Duration = Duration::from_secs(120);

/// `tests/py/<name>`.
pub fn script(name: &str) -> PathBuf {
    repo_root().join("tests").join("py").join(name)
}

/// The Python interpreter: `$PYTHON` or `python3`.
pub fn interpreter() -> String {
    std::env::var("PYTHON").unwrap_or_else(|_| "python3".to_owned())
}

/// Runs `python3 tests/py/<name> ARGS...` and parses the last non-empty line of its stdout as
/// JSON. A non-zero exit, a timeout or output that is not JSON is an error carrying stderr.
pub fn run_script<S: AsRef<str>>(name: &str, args: &[S]) -> Result<serde_json::Value> {
    run_script_with_env(name, args, &[])
}

/// [`run_script`] with extra environment variables.
pub fn run_script_with_env<S: AsRef<str>>(
    name: &str,
    args: &[S],
    env: &[(&str, &str)],
) -> Result<serde_json::Value> {
    let path = script(name);
    if !path.is_file() {
        return Err(Error::Missing {
            what: format!("Python script {name}"),
            path,
            hint: "the scripts live in tests/py",
        });
    }
    let stdout_file = tempfile_path(name, "stdout")?;
    let stderr_file = tempfile_path(name, "stderr")?;
    let stdout =
        std::fs::File::create(&stdout_file).map_err(crate::io("creating a stdout file"))?;
    let stderr =
        std::fs::File::create(&stderr_file).map_err(crate::io("creating a stderr file"))?;
    let mut command = Command::new(interpreter());
    command
        .arg(&path)
        .args(args.iter().map(AsRef::as_ref))
        .env("PYTHONUNBUFFERED", "1")
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr);
    for (key, value) in env {
        command.env(key, value);
    }
    let mut child = ChildGuard::spawn(format!("python {name}"), &mut command)?;
    let status = child.wait_timeout(SCRIPT_TIMEOUT);
    let out = std::fs::read_to_string(&stdout_file).unwrap_or_default();
    let err = std::fs::read_to_string(&stderr_file).unwrap_or_default();
    let _ = std::fs::remove_file(&stdout_file);
    let _ = std::fs::remove_file(&stderr_file);
    let status = status.map_err(|error| Error::Peer(format!("{error}\nstderr:\n{err}")))?;
    if !status.success() {
        return Err(Error::Peer(format!(
            "python {name} failed ({status})\nstdout:\n{out}\nstderr:\n{err}"
        )));
    }
    parse_last_json_line(&out).ok_or_else(|| {
        Error::Peer(format!(
            "python {name} printed no JSON\nstdout:\n{out}\nstderr:\n{err}"
        ))
    })
}

fn tempfile_path(name: &str, stream: &str) -> Result<PathBuf> {
    let dir = crate::scratch_dir("py")?;
    Ok(dir.join(format!("{}.{stream}", name.replace('/', "_"))))
}

/// The last line of `output` that parses as JSON.
pub fn parse_last_json_line(output: &str) -> Option<serde_json::Value> {
    output
        .lines()
        .rev()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .find_map(|line| serde_json::from_str(line).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_json_line_wins() {
        let value = parse_last_json_line("noise\n{\"a\":1}\n{\"b\":2}\n\n").expect("json");
        assert_eq!(value["b"], 2);
        assert!(parse_last_json_line("no json here").is_none());
    }
}
