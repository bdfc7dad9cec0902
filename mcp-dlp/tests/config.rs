//! The `[dlp]` TOML section: a full example builds; mistakes give errors that say what is wrong.

use mcp_dlp::Config;

const FULL: &str = r#"
enabled = true
default_action = "redact"
hash_key = "0123456789abcdef0123456789abcdef"
max_depth = 64

[detectors]
disable = ["ipv6"]

[[custom]]
name = "employee_id"
pattern = "EMP-[0-9]{6}"
context = ["employee", "staff"]
require_context = false

[[rules]]
name = "block-cloud-keys"
detectors = ["aws_access_key", "aws_secret_key", "github_token", "private_key"]
action = "block"

[[rules]]
name = "mask-cards-in-results"
detectors = ["credit_card"]
directions = ["response"]
action = "mask"
keep = 4

[[rules]]
name = "crm-emails-hashed"
detectors = ["email"]
servers = ["crm"]
tools = ["lookup_customer"]
action = "hash"

[[rules]]
name = "staff-ids"
detectors = ["employee_id"]
action = "replace"
replacement = "<employee>"

[[engines]]
name = "presidio"
url = "http://127.0.0.1:5002/inspect"
timeout_ms = 300
fail = "open"
directions = ["response"]

[injection]
action = "block"
threshold = 0.7
"#;

#[test]
fn full_example_builds() {
    let c = Config::from_toml(FULL).expect("parses");
    let layer = c.layer().expect("builds").expect("enabled");
    let s = layer.get_scanner();
    assert!(s.detectors().index_of("ipv6").is_none());
    assert!(s.detectors().index_of("employee_id").is_some());
    let mut r = mcp_dlp::Report::default();
    let out = s.scan_str(
        "staff EMP-123456",
        &mcp_dlp::Scope::direction(mcp_gateway_core::Direction::Request),
        &mut r,
    );
    assert_eq!(out, "staff <employee>");
}

#[test]
fn errors_say_what_is_wrong() {
    let cases = [
        ("bogus = 1", "unknown field"),
        (
            "[[rules]]\nname = \"r\"\ndetectors = [\"emial\"]\naction = \"block\"",
            "unknown detector `emial`",
        ),
        (
            "[[rules]]\nname = \"r\"\naction = \"replace\"",
            "needs `replacement`",
        ),
        (
            "[[rules]]\nname = \"r\"\naction = \"hash\"",
            "needs `hash_key`",
        ),
        ("hash_key = \"short\"", "at least 16"),
        (
            "[detectors]\nenable = [\"nope\"]",
            "unknown detector `nope`",
        ),
        (
            "[[custom]]\nname = \"big\"\npattern = \"x\"\nvalidator = \"luhn\"\n[[custom]]\nname = \"big\"\npattern = \"y\"",
            "defined twice",
        ),
        (
            &format!(
                "[[custom]]\nname = \"long\"\npattern = \"{}\"",
                "a".repeat(2000)
            ),
            "over the limit",
        ),
        (
            "[[custom]]\nname = \"bad\"\npattern = \"(unclosed\"",
            "detector `bad`: invalid pattern",
        ),
        (
            "[[custom]]\nname = \"email\"\npattern = \"x\"",
            "name of a built-in",
        ),
        (
            "[[engines]]\nname = \"e\"\nurl = \"not a url\"",
            "engine `e`: url",
        ),
        (
            "[[engines]]\nname = \"e\"\nurl = \"http://127.0.0.1:1/\"\ntimeout_ms = 0",
            "timeout_ms",
        ),
        ("[injection]\nthreshold = 2.0", "threshold"),
        (
            "[[rules]]\nname = \"r\"\naction = \"block\"\nkeep = 3",
            "`keep` is only for",
        ),
        (
            "[[rules]]\nname = \"r\"\naction = \"redact\"\ndirections = [\"sideways\"]",
            "unknown variant",
        ),
    ];
    for (toml, want) in cases {
        let err = Config::from_toml(toml)
            .and_then(|c| c.layer().map(|_| ()))
            .expect_err(toml);
        let msg = err.to_string();
        assert!(
            msg.contains(want),
            "{toml:?}: {msg:?} does not contain {want:?}"
        );
    }
}
