//! One test per scenario file (stub).
fn main() {}
