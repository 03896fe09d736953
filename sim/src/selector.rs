//! Label selectors (`matchLabels`, `matchExpressions`). (Stub: being written.)
