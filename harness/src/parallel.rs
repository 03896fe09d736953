//! Running one piece of blocking work per node at once (rule loads, tool runs), each on
//! its own scoped thread, with the results back in order. A thread that panics becomes
//! an error for its item instead of taking the whole run down.

use anyhow::{Result, anyhow};

/// Runs `f` on every item in parallel; results come back in the items' order.
pub fn each<I: Sync, T: Send>(
    items: &[I],
    what: &str,
    f: impl Fn(&I) -> Result<T> + Sync,
) -> Vec<Result<T>> {
    let f = &f;
    std::thread::scope(|s| {
        let handles: Vec<_> = items.iter().map(|item| s.spawn(move || f(item))).collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow!("a thread doing {what} panicked")))
            })
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_order_and_turns_panics_into_errors() {
        let out = each(&[1, 2, 3], "a test", |n| {
            if *n == 2 {
                panic!("boom");
            }
            Ok(n * 10)
        });
        assert_eq!(out[0].as_ref().unwrap(), &10);
        assert!(out[1].as_ref().unwrap_err().to_string().contains("a test"));
        assert_eq!(out[2].as_ref().unwrap(), &30);
    }
}
