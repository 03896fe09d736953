//! Reading back what `nft list table ip kube-proxy` prints: the names of the chains and
//! sets it holds (to find stale ones) and the listing normalised for snapshots.

/// The chains and sets (maps excluded) named in an `nft list table ip kube-proxy`
/// listing, in listing order.
pub fn listed_names(listing: &str) -> (Vec<String>, Vec<String>) {
    let mut chains = Vec::new();
    let mut sets = Vec::new();
    for line in listing.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["chain", name, "{"] => chains.push(name.to_string()),
            ["set", name, "{"] => sets.push(name.to_string()),
            _ => {}
        }
    }
    (chains, sets)
}

/// `nft list table ip kube-proxy` normalised for snapshots: the listing as nft prints
/// it, except that each `elements = { … }` block is written one element per line, sorted
/// (the kernel lists hash-set elements in no stable order, and nft packs them by line
/// width), and the `expires …` countdown of dynamic (affinity) set elements is dropped.
/// There are no handles (nft prints them only with `-a`) and no counters (kube-proxy
/// writes none).
pub fn normalise_listing(listing: &str) -> String {
    let mut out = String::with_capacity(listing.len());
    let mut lines = listing.lines();
    while let Some(line) = lines.next() {
        let trimmed = line.trim_start();
        let Some(rest) = trimmed.strip_prefix("elements = {") else {
            out.push_str(line.trim_end());
            out.push('\n');
            continue;
        };
        let indent = &line[..line.len() - trimmed.len()];
        let mut inner = rest.to_string();
        while !inner.trim_end().ends_with('}') {
            match lines.next() {
                Some(more) => {
                    inner.push(' ');
                    inner.push_str(more.trim());
                }
                None => break,
            }
        }
        let inner = inner.trim_end().trim_end_matches('}');
        let mut items: Vec<String> = inner
            .split(',')
            .map(drop_expiry)
            .filter(|s| !s.is_empty())
            .collect();
        items.sort();
        items.dedup();
        out.push_str(indent);
        out.push_str("elements = {");
        for (k, item) in items.iter().enumerate() {
            if k > 0 {
                out.push_str(",\n");
                out.push_str(indent);
                out.push_str("\t     ");
            } else {
                out.push(' ');
            }
            out.push_str(item);
        }
        out.push_str(" }\n");
    }
    out
}

/// One element's text without its `expires <time>` countdown, blanks collapsed.
fn drop_expiry(item: &str) -> String {
    let mut words = Vec::new();
    let mut it = item.split_whitespace();
    while let Some(w) = it.next() {
        if w == "expires" {
            it.next();
            continue;
        }
        words.push(w);
    }
    words.join(" ")
}
