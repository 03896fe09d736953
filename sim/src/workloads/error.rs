//! Why a workload manifest is refused: each error carries the field path inside the
//! manifest (`spec.replicas`, `spec.selector`) so the scenario parser can point at the
//! file, line and column; the messages say what the API server would say.

/// A workload manifest the API server would refuse, or a kind knetlab cannot model.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WorkloadError {
    /// A count (`spec.replicas`, `spec.parallelism`, ...) below zero.
    #[error("field `{path}`: must be greater than or equal to 0, not {value}")]
    Negative { path: String, value: i64 },
    /// More pods than a lab can run; the API server would accept it, knetlab cannot.
    #[error("field `{path}`: {value} pods; knetlab runs at most {max} pods per controller")]
    TooMany {
        path: String,
        value: i64,
        max: usize,
    },
    /// A selector that is empty or does not select the template's own pods.
    #[error("field `{path}`: {message}")]
    Selector { path: String, message: String },
    /// Anything else the API server's validation refuses (missing template, no
    /// containers, a restartPolicy the controller cannot use).
    #[error("field `{path}`: {message}")]
    Invalid { path: String, message: String },
    /// A kind that changes the pod network but that knetlab does not model: running the
    /// scenario without it would predict the wrong reachability.
    #[error(
        "kind {kind} ({api_version}) changes the pod network ({what}), and knetlab does not model it"
    )]
    UnsupportedKind {
        api_version: String,
        kind: String,
        what: String,
    },
}

impl WorkloadError {
    /// The field path inside the manifest (`kind` for an unsupported kind).
    pub fn path(&self) -> &str {
        match self {
            WorkloadError::Negative { path, .. }
            | WorkloadError::TooMany { path, .. }
            | WorkloadError::Selector { path, .. }
            | WorkloadError::Invalid { path, .. } => path,
            WorkloadError::UnsupportedKind { .. } => "kind",
        }
    }

    /// The message without the field path (for callers that place the path themselves).
    pub fn message(&self) -> String {
        let text = self.to_string();
        match text.strip_prefix(&format!("field `{}`: ", self.path())) {
            Some(rest) => rest.to_string(),
            None => text,
        }
    }

    pub(crate) fn invalid(path: impl Into<String>, message: impl Into<String>) -> Self {
        WorkloadError::Invalid {
            path: path.into(),
            message: message.into(),
        }
    }
}
