//! The `expect:` section in its two forms. (Stub: being written.)
