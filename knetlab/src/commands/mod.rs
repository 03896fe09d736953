//! One file per user command (`check`, `diff`, `test` share `manifests`, `owners` and
//! `baseline`), and the scenario command's output formats (`json`, `report`).

pub mod baseline;
pub mod check;
pub mod clean;
pub mod diff;
pub mod down;
pub mod exec;
pub mod json;
pub mod list;
pub mod manifests;
pub mod owners;
pub mod report;
pub mod scenario;
pub mod shell;
pub mod test;
