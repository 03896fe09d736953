//! One test per scenario file (being written; see /tmp/scenarios.rs).
fn main() {}
