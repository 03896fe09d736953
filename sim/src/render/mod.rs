//! Rule renderers: pure functions from cluster state to the text loaded into a node.
//! (Stub: being written.)
