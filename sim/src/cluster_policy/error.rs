//! Why a cluster-wide policy manifest is refused. Each error carries the field path
//! inside the manifest (`spec.priority`, `spec.egress[0].to[1]`) so the scenario parser
//! can point at the file, line and column; the messages say what the CRD's schema and
//! CEL rules would say.

/// A ClusterNetworkPolicy / AdminNetworkPolicy / BaselineAdminNetworkPolicy that the
/// API server would refuse, or that uses a feature knetlab cannot model.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClusterPolicyError {
    /// The manifest does not have the API's shape (unknown field, wrong type).
    #[error("field `{path}`: {message}")]
    Shape { path: String, message: String },
    /// A value the CRD's validation refuses (range, enum, exactly one of, limits).
    #[error("field `{path}`: {message}")]
    Invalid { path: String, message: String },
    /// Valid for the API, but knetlab cannot predict it (domain names need DNS
    /// snooping; an older API revision's fields). Never ignored silently.
    #[error("field `{path}`: {message}; knetlab does not model this")]
    Unsupported { path: String, message: String },
}

impl ClusterPolicyError {
    /// The field path inside the manifest.
    pub fn path(&self) -> &str {
        match self {
            ClusterPolicyError::Shape { path, .. }
            | ClusterPolicyError::Invalid { path, .. }
            | ClusterPolicyError::Unsupported { path, .. } => path,
        }
    }

    pub(crate) fn invalid(path: impl Into<String>, message: impl Into<String>) -> Self {
        ClusterPolicyError::Invalid {
            path: path.into(),
            message: message.into(),
        }
    }

    pub(crate) fn unsupported(path: impl Into<String>, message: impl Into<String>) -> Self {
        ClusterPolicyError::Unsupported {
            path: path.into(),
            message: message.into(),
        }
    }
}
