//! The tracing subscriber: harness and sim log through `tracing`; this prints their
//! events on stderr (stdout stays the command's output, e.g. `--json`). Warnings show by
//! default, `-v` adds debug events, `-vv` trace; `RUST_LOG` (env-filter syntax) wins
//! over both.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Installs the subscriber; a second call (tests, xtask after knetlab) does nothing.
pub fn init(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "warn,harness=debug,sim=debug,knetlab=debug",
        _ => "trace",
    };
    let filter = std::env::var("RUST_LOG")
        .ok()
        .filter(|v| !v.is_empty())
        .and_then(|v| EnvFilter::try_new(v).ok())
        .unwrap_or_else(|| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colours only for a person watching, not in captured logs.
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(verbose > 0)
        .without_time()
        .try_init();
}
