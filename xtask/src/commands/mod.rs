//! One file per developer task (the user commands are knetlab's, see `knetlab::cli`).

pub mod bench;
pub mod bench_check;
pub mod bench_manifests;
pub mod bench_scale;
pub mod bench_services;
pub mod bench_tiers;
pub mod differential;
pub mod soak;
pub mod test;
