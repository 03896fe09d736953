//! One file per subcommand.

pub mod bench;
pub mod bench_scale;
pub mod clean;
pub mod json;
pub mod list;
pub mod scenario;
pub mod test;
