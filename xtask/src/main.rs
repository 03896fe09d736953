//! knetlab's command line (stub).
fn main() {}
