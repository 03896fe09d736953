//! The oracle: predicts each matrix cell from the Kubernetes objects, with a reason.
//! (Stub: being written.)
