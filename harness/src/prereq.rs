//! Checks for the system pieces knetlab needs. (Stub.)
