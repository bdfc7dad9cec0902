//! Run with `RUSTC_BOOTSTRAP=1 cargo fuzz run policy_document fuzz/corpus/policy_document fuzz/seeds/policy_document`
//! (from the repository root). A policy file's text: parsing never panics, errors carry a line,
//! and an accepted document written back as TOML parses to the same document.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match mcp_policy::config::parse_document(text, None) {
        Ok(doc) => {
            if let Ok(again) = toml::to_string(&doc) {
                let reparsed = mcp_policy::config::parse_document(&again, None)
                    .unwrap_or_else(|e| panic!("a written policy does not parse: {e}\n{again}"));
                assert_eq!(reparsed, doc);
            }
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
});
