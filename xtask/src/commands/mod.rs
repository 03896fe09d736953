//! One file per subcommand.

pub mod bench;
pub mod bench_scale;
pub mod bench_services;
pub mod clean;
pub mod down;
pub mod exec;
pub mod json;
pub mod list;
pub mod report;
pub mod scenario;
pub mod shell;
pub mod soak;
pub mod test;
