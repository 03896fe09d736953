//! Running a scenario end to end. (Stub.)
