//! The MCP conformance suite (`@modelcontextprotocol/conformance` 0.1.16, server mode, every
//! scenario incl. pending ones) against the rmcp fixture directly. The through-the-gateway run
//! compares itself with `conformance::FIXTURE_PASSES`.

use std::collections::BTreeSet;

use mcp_gateway_tests::conformance::{self, FIXTURE_PASSES};
use mcp_gateway_tests::spawn_conformance_fixture;

#[test]
fn conformance_fixture_direct() {
    let fixture = spawn_conformance_fixture().expect("fixture starts");
    let report = conformance::run(&fixture.url).expect("suite runs");
    println!("{}", report.table());

    let expected: BTreeSet<String> = FIXTURE_PASSES.iter().map(|s| (*s).to_owned()).collect();
    let passed = report.passed();
    let missing: Vec<_> = expected.difference(&passed).collect();
    for name in &missing {
        if let Some(scenario) = report.scenarios.get(*name) {
            eprintln!("{name}: {:?}", scenario.failures());
        }
    }
    assert!(
        missing.is_empty(),
        "scenarios the fixture should pass but did not: {missing:?} (results in {})",
        report.output_dir.display()
    );
    // A scenario the suite added since this list was written shows up here.
    let unknown: Vec<_> = report
        .scenarios
        .keys()
        .filter(|name| !expected.contains(*name))
        .collect();
    assert!(
        unknown.is_empty(),
        "new scenarios: {unknown:?}: record how the fixture does"
    );

    for version in ["2025-06-18", "2025-11-25"] {
        let scenarios: Vec<_> = report.for_spec_version(version).collect();
        assert!(!scenarios.is_empty(), "no scenario for {version}");
        assert!(
            scenarios.iter().all(|(_, scenario)| scenario.is_pass()),
            "{version}: not every scenario passes"
        );
    }
    let (checks_passed, checks_failed) = report.check_totals();
    assert_eq!(checks_failed, 0);
    assert!(checks_passed >= FIXTURE_PASSES.len());
}
