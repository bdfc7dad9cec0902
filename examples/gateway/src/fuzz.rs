//! The body of the cargo-fuzz target `gateway_config` in `fuzz/` (feature `fuzzing`): the
//! gateway's TOML configuration, validated without reading the files it names
//! ([`crate::config::validate`]'s path). It checks what the validator promises, so a fuzzer
//! finds wrong answers as well as panics. The unit tests run the same body on stable Rust over
//! seeds (`fuzz/seeds/gateway_config/`) and random input.

use std::collections::HashSet;

use mcp_gateway_core::upstream::Transport;

use crate::config::{ConfigError, Files, Settings, parse_with};

/// A configuration file's text. Beyond "no panic":
///
/// - a rejected text has at least one error; each has a non-empty message, and a line and column
///   together or neither; the line is one of the text's lines and the column is within that line
///   (or just past its end); the rendered error starts with `line L, column C: ` when it has them;
/// - an accepted text gives settings that keep the promises of the validation: the text itself,
///   distinct upstream names each acceptable to the naming (what `Gateway::builder().build()`
///   checks when serving starts), a separator without white space, a
///   `page_size` of at least 1, http(s) upstream URLs with a host, none of them to a link-local or
///   metadata host unless `allow_link_local = true`;
/// - the answer is deterministic: the same text gives the same errors, or the same settings.
pub fn gateway_config(data: &[u8]) {
    // The binary reads the file with `read_to_string`, which refuses anything but UTF-8.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let first = parse_with(text, Files::Skip);
    match &first {
        Err(errors) => {
            assert!(!errors.is_empty(), "rejected without an error");
            for e in errors {
                check_error(text, e);
            }
        }
        Ok(settings) => check_settings(text, settings),
    }
    let second = parse_with(text, Files::Skip);
    match (&first, &second) {
        (Err(a), Err(b)) => assert_eq!(a, b, "the same text gave different errors"),
        (Ok(a), Ok(b)) => assert_eq!(
            format!("{a:?}"),
            format!("{b:?}"),
            "the same text gave different settings"
        ),
        _ => panic!("the same text was accepted once and rejected once"),
    }
}

fn check_error(text: &str, e: &ConfigError) {
    assert!(
        !e.message.trim().is_empty(),
        "an error without a message: {e:?}"
    );
    assert_eq!(
        e.line.is_some(),
        e.column.is_some(),
        "a line without a column or the reverse: {e:?}"
    );
    let (Some(line), Some(column)) = (e.line, e.column) else {
        assert_eq!(e.to_string(), e.message);
        return;
    };
    // `position` counts lines by '\n'; a text of n newlines has n + 1 lines (the last may be empty).
    let lines: Vec<&str> = text.split('\n').collect();
    assert!(
        (1..=lines.len()).contains(&line),
        "line {line} of a {}-line text: {e:?}",
        lines.len()
    );
    let len = lines[line - 1].len();
    assert!(
        (1..=len + 1).contains(&column),
        "column {column} of a {len}-byte line: {e:?}"
    );
    assert!(
        e.to_string()
            .starts_with(&format!("line {line}, column {column}: ")),
        "{e}"
    );
}

fn check_settings(text: &str, s: &Settings) {
    assert_eq!(s.text, text);
    assert!(
        !s.naming.separator.is_empty() && !s.naming.separator.chars().any(char::is_whitespace),
        "separator {:?}",
        s.naming.separator
    );
    assert_ne!(s.page_size, Some(0));
    let mut names = HashSet::new();
    for u in &s.upstreams {
        assert!(names.insert(&*u.name), "two upstreams named {:?}", u.name);
        if let Transport::Http { url, .. } = &u.transport {
            let uri = url
                .parse::<http::Uri>()
                .unwrap_or_else(|e| panic!("accepted url {url:?}: {e}"));
            assert!(
                matches!(uri.scheme_str(), Some("http" | "https")) && uri.host().is_some(),
                "accepted url {url:?}"
            );
            if !s.allow_link_local {
                assert_eq!(
                    mcp_gateway_core::ssrf::refused_url(url),
                    None,
                    "accepted url {url:?}"
                );
            }
        }
    }
    // What `Gateway::builder().build()` refuses when serving starts, `check` must refuse too.
    for u in &s.upstreams {
        assert!(
            s.naming.check_server_name(&u.name).is_ok(),
            "accepted server name {:?} with separator {:?}",
            u.name,
            s.naming.separator
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The checked-in seeds of the fuzz target, which are real configurations (the README's, the
    /// benches', the default) and broken ones.
    fn seeds() -> Vec<(String, Vec<u8>)> {
        let dir = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../fuzz/seeds/gateway_config"
        );
        let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("{dir}: {e}"))
            .map(|entry| {
                let path = entry.expect("a directory entry").path();
                let data = std::fs::read(&path).expect("a seed");
                (path.display().to_string(), data)
            })
            .collect();
        out.sort();
        out
    }

    #[test]
    fn the_body_passes_the_seeds() {
        let seeds = seeds();
        assert!(seeds.len() >= 8, "{} seeds", seeds.len());
        for (name, data) in &seeds {
            eprintln!("{name}");
            gateway_config(data);
        }
    }

    #[test]
    fn the_body_passes_the_default() {
        gateway_config(crate::config::default_text().as_bytes());
    }

    #[test]
    fn the_seeds_hold_valid_and_broken_configurations() {
        let (mut valid, mut broken) = (0, 0);
        for (name, data) in seeds() {
            let text = String::from_utf8(data).unwrap_or_else(|e| panic!("{name}: {e}"));
            match crate::config::validate(&text) {
                Ok(()) => valid += 1,
                Err(_) => broken += 1,
            }
        }
        assert!(valid >= 4 && broken >= 4, "{valid} valid, {broken} broken");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        #[test]
        fn the_body_survives_random_bytes(data in proptest::collection::vec(any::<u8>(), 0..256)) {
            gateway_config(&data);
        }

        #[test]
        fn the_body_survives_config_shaped_text(
            lines in proptest::collection::vec(
                "(\\[\\[server\\]\\]|\\[\\[managed\\]\\]|\\[policy\\]|\\[dlp\\]|\\[audit\\]|\\[identity\\]|\\[admin\\]|(listen|prefix|separator|page_size|name|command|url|args|protocol|timeout_ms|session_key|allow_link_local) = (\"[ -~]{0,12}\"|[0-9]{1,3}|true|\\[\\]))",
                0..10,
            )
        ) {
            gateway_config(lines.join("\n").as_bytes());
        }
    }
}
