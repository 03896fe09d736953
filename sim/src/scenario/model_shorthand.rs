//! The `model:` shorthand for the standard conformance model. (Stub: being written.)
