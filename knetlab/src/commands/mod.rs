//! One file per user command, and the scenario command's output formats (`json`,
//! `report`).

pub mod clean;
pub mod down;
pub mod exec;
pub mod json;
pub mod list;
pub mod report;
pub mod scenario;
pub mod shell;
