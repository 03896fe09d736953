//! What can go wrong at the seam, typed so that callers can tell a tool that failed from
//! a kernel call that failed, and every error names the namespace it happened in.

use super::NsRef;

/// A tool run inside a namespace that did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    #[error("start `{shown}` in namespace {ns}")]
    Start {
        shown: String,
        ns: String,
        #[source]
        source: std::io::Error,
    },
    #[error("write the script to `{shown}` in namespace {ns}")]
    Stdin {
        shown: String,
        ns: String,
        #[source]
        source: std::io::Error,
    },
    #[error("wait for `{shown}` in namespace {ns}")]
    Wait {
        shown: String,
        ns: String,
        #[source]
        source: std::io::Error,
    },
    /// The tool ran and exited with an error. `line` is the script line it complained
    /// about, when it named one.
    #[error("`{shown}` failed in namespace {ns} ({status}): {stderr}{}",
        .line.as_ref().map(|nl| format!("\n  line {} of the script: {}", nl.0, nl.1)).unwrap_or_default())]
    Failed {
        shown: String,
        ns: String,
        status: String,
        stderr: String,
        line: Option<Box<(usize, String)>>,
    },
    #[error("`{shown}` in namespace {ns} printed non-UTF-8")]
    NotUtf8 { shown: String, ns: String },
    #[error("cannot run `{shown}` in namespace {ns}: no such namespace handle")]
    NoNamespace { shown: String, ns: String },
}

impl ToolError {
    /// The namespace the tool ran in.
    pub fn namespace(&self) -> &str {
        match self {
            ToolError::Start { ns, .. }
            | ToolError::Stdin { ns, .. }
            | ToolError::Wait { ns, .. }
            | ToolError::Failed { ns, .. }
            | ToolError::NotUtf8 { ns, .. }
            | ToolError::NoNamespace { ns, .. } => ns,
        }
    }
}

/// A call at the seam that did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum SystemError {
    #[error(transparent)]
    Tool(#[from] ToolError),
    /// A kernel call (netlink, a sysctl file) failed.
    #[error("{what} in namespace {ns}")]
    Kernel {
        ns: String,
        what: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("namespace {ns} has no link named {link}")]
    NoLink { ns: String, link: String },
    #[error("no handle on namespace {ns}")]
    NoNamespace { ns: String },
}

impl SystemError {
    pub(crate) fn kernel(
        ns: &NsRef,
        what: String,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        SystemError::Kernel {
            ns: ns.name().to_string(),
            what,
            source: source.into(),
        }
    }
}
