//! knetlab's user commands, shared by the `knetlab` binary and `cargo xtask`: run a
//! scenario's cluster and print its reachability matrix, list the scenarios, sweep what
//! killed runs left, enter or remove a kept cluster. [`cli`] holds the clap definitions
//! and the one entry point; a file per command under [`commands`]; [`scenarios`] finds
//! the scenario files (source tree, a given directory, or built in); [`logging`] installs
//! the tracing subscriber.

pub mod cli;
pub mod commands;
pub mod logging;
pub mod scenarios;
