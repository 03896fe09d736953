//! The oracle against the kernel at scale: seeded random cases applied to live clusters,
//! every probed cell compared with the oracle's verdict. [`policy`] runs random
//! NetworkPolicies and labels over the standard model; [`services`] runs random Service
//! sets. The differential test (`harness/tests/differential.rs`) runs a few hundred in
//! CI; `cargo xtask differential` runs any number and prints every disagreement.

pub mod policy;
pub mod services;

/// `seeds` consecutive seeds from `first`.
pub fn seeds(first: u64, cases: u64) -> Vec<u64> {
    (first..first.saturating_add(cases)).collect()
}
