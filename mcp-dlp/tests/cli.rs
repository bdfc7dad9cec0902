//! `dlp scan`: findings per line with byte offsets, `--whole`, `--rewrite`, large input in
//! bounded windows, invalid UTF-8, config-driven actions.

use mcp_dlp::{Config, cli};

fn run(args: &cli::ScanArgs, config: Option<&Config>, input: &[u8]) -> (String, cli::ScanStats) {
    let mut out = Vec::new();
    let stats = cli::run(args, config, input, &mut out).expect("scan");
    (String::from_utf8_lossy(&out).into_owned(), stats)
}

#[test]
fn one_json_line_per_record_with_byte_offsets() {
    let input = b"contact me: john.doe@example.com\nnothing here\n\xff\xfe ip 10.1.2.3\n";
    let (out, stats) = run(&cli::ScanArgs::default(), None, input);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(
        lines[0],
        r#"{"findings":[{"kind":"email","start":12,"end":32,"action":"redact"}]}"#
    );
    assert_eq!(lines[1], r#"{"findings":[]}"#);
    assert_eq!(
        lines[2],
        r#"{"findings":[{"kind":"ipv4","start":6,"end":14,"action":"redact"}]}"#
    );
    assert_eq!(stats.records, 3);
    assert_eq!(stats.findings, 2);
}

#[test]
fn whole_and_rewrite() {
    let input = b"a: bob@example.com\nb: AKIAIOSFODNN7EXAMPLE\n";
    let args = cli::ScanArgs {
        whole: true,
        ..Default::default()
    };
    let (out, _) = run(&args, None, input);
    assert_eq!(
        out,
        "{\"findings\":[{\"kind\":\"email\",\"start\":3,\"end\":18,\"action\":\"redact\"},{\"kind\":\"aws_access_key\",\"start\":22,\"end\":42,\"action\":\"redact\"}]}\n"
    );
    let args = cli::ScanArgs {
        rewrite: true,
        ..Default::default()
    };
    let (out, _) = run(&args, None, input);
    assert_eq!(out, "a: [REDACTED:email]\nb: [REDACTED:aws_access_key]\n");
}

#[test]
fn config_actions_apply() {
    let config = Config::from_toml(
        r#"
        [[rules]]
        name = "mask-cards"
        detectors = ["credit_card"]
        action = "mask"
        keep = 4
        "#,
    )
    .expect("config");
    let args = cli::ScanArgs {
        rewrite: true,
        ..Default::default()
    };
    let (out, _) = run(&args, Some(&config), b"pay 4111111111111111 now\n");
    assert_eq!(out, "pay ************1111 now\n");
    let (out, _) = run(
        &cli::ScanArgs::default(),
        Some(&config),
        b"pay 4111111111111111 now\n",
    );
    assert!(out.contains("\"action\":\"mask\""), "{out}");
}

#[test]
fn large_whole_record_in_windows_finds_everything_once() {
    // 5 MiB record with a secret every ~100 KiB, some straddling the 1 MiB window edges
    let filler = "lorem ipsum dolor sit amet ".repeat(4000); // ~108 KB
    let mut input = String::new();
    let mut expected = Vec::new();
    for _ in 0..48 {
        input.push_str(&filler);
        let start = input.len();
        input.push_str("AKIAIOSFODNN7EXAMPLE");
        expected.push((start, start + 20));
        input.push(' ');
    }
    let args = cli::ScanArgs {
        whole: true,
        ..Default::default()
    };
    let (out, stats) = run(&args, None, input.as_bytes());
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("json");
    let found: Vec<(usize, usize)> = v["findings"]
        .as_array()
        .expect("array")
        .iter()
        .map(|f| {
            (
                f["start"].as_u64().unwrap_or(0) as usize,
                f["end"].as_u64().unwrap_or(0) as usize,
            )
        })
        .collect();
    assert_eq!(found, expected);
    assert_eq!(stats.bytes as usize, input.len());
    // rewrite of the same stream keeps everything else byte for byte
    let args = cli::ScanArgs {
        whole: true,
        rewrite: true,
        ..Default::default()
    };
    let (out, _) = run(&args, None, input.as_bytes());
    assert_eq!(
        out,
        input.replace("AKIAIOSFODNN7EXAMPLE", "[REDACTED:aws_access_key]")
    );
}

#[test]
fn reads_a_file_and_reports_missing_ones() {
    let dir = std::env::temp_dir().join(format!("mcp-dlp-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("sample.txt");
    std::fs::write(&path, "ssn 123-45-6789\n").expect("write");
    let args = cli::ScanArgs {
        file: Some(path.clone()),
        ..Default::default()
    };
    let (out, _) = run(&args, None, b"");
    assert!(out.contains("\"kind\":\"ssn\""), "{out}");
    let args = cli::ScanArgs {
        file: Some(dir.join("missing.txt")),
        ..Default::default()
    };
    let mut sink = Vec::new();
    let err = cli::run(&args, None, &b""[..], &mut sink).expect_err("missing file");
    assert!(err.to_string().contains("missing.txt"), "{err}");
    let _ = std::fs::remove_dir_all(dir);
}
