//! The kernel's neighbour (ARP) table, which every network namespace on the machine
//! shares: its size limit (`net.ipv4.neigh.default.gc_thresh3`, settable only in the root
//! namespace) and how often it was full. Pods on one node's bridge resolve each other
//! directly, so a matrix of many pods per node needs pods² entries at once; past the
//! limit the kernel drops packets to unresolved addresses, which would pass for a
//! policy's drop. Read only: knetlab never changes host settings.

use std::path::Path;

/// The host's limit, read where only the root namespace shows it.
const LIMIT: &str = "/proc/sys/net/ipv4/neigh/default/gc_thresh3";
/// The table's counters, one line per CPU (the root namespace's view; PID 1 lives there).
const STATS: [&str; 2] = ["/proc/1/net/stat/arp_cache", "/proc/net/stat/arp_cache"];

/// The host-wide limit on neighbour entries, if this process can read it.
pub fn limit() -> Option<u64> {
    std::fs::read_to_string(LIMIT).ok()?.trim().parse().ok()
}

/// How many times the table has been full since boot (summed over the CPUs), if the
/// counters are readable here (not from inside a container with its own namespace).
pub fn table_fulls() -> Option<u64> {
    STATS
        .iter()
        .find_map(|p| std::fs::read_to_string(Path::new(p)).ok())
        .and_then(|text| parse_table_fulls(&text))
}

/// Sums the `table_fulls` column (hexadecimal, like every column of the file).
fn parse_table_fulls(text: &str) -> Option<u64> {
    let mut lines = text.lines();
    let column = lines
        .next()?
        .split_whitespace()
        .position(|h| h == "table_fulls")?;
    let mut total = 0u64;
    for line in lines {
        let field = line.split_whitespace().nth(column)?;
        total = total.saturating_add(u64::from_str_radix(field, 16).ok()?);
    }
    Some(total)
}

/// What an overflow during a step means, for the error that stops the run.
pub fn overflow_message(times: u64) -> String {
    let limit = limit().map_or_else(
        || "its limit".to_string(),
        |l| format!("its limit of {l} entries"),
    );
    format!(
        "the kernel's neighbour (ARP) table was full {times} time(s) while probing: it is \
         shared by every namespace on this machine ({limit}, \
         net.ipv4.neigh.default.gc_thresh3), and pods on one node resolve each other \
         directly, so packets to unresolved addresses were dropped; spread the pods over \
         more nodes (--nodes) or probe fewer of them, or raise that limit on this host \
         yourself (knetlab never changes host settings)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_the_table_fulls_column_over_the_cpus() {
        let text = "entries  allocs   destroys table_fulls\n\
                    00000010 00000001 00000002 0000000a\n\
                    00000010 00000003 00000004 00000005\n";
        assert_eq!(parse_table_fulls(text), Some(15));
    }

    #[test]
    fn a_file_without_the_column_gives_nothing() {
        assert_eq!(parse_table_fulls("entries allocs\n1 2\n"), None);
        assert_eq!(parse_table_fulls(""), None);
    }
}
