//! Sweeping what runs left behind, found by the run prefix only. (Stub: being written.)
