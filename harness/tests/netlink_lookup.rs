//! The typed netlink wrapper's link lookup, against a real namespace: a link is found by
//! name in one request, and a missing one is `None` (or `SystemError::NoLink`), not a
//! kernel error. Needs root: ignored unless run with `--include-ignored`.

mod common;

use harness::netns::{self, Netns};
use harness::run::new_prefix;
use harness::system::netlink::blocking;
use harness::system::{NsRef, SystemError};

#[test]
#[ignore = "needs root: builds a network namespace"]
fn a_link_is_found_by_name_and_a_missing_one_is_none() {
    common::require_root(&[]);
    let name = format!("{}-lookup", new_prefix());
    let ns = Netns::create_many(std::slice::from_ref(&name))
        .unwrap()
        .remove(0);
    let found = blocking(&NsRef::from(&ns), "look up links".into(), |nl| async move {
        Ok((
            nl.link_index("lo").await?,
            nl.link_index("no-such-link").await?,
            nl.index_by_name("no-such-link").await,
        ))
    });
    drop(ns);
    netns::delete(&name).unwrap();
    let (lo, missing, missing_err) = found.unwrap();
    assert_eq!(lo, Some(1), "lo is the first link of every namespace");
    assert_eq!(missing, None);
    assert!(
        matches!(missing_err, Err(SystemError::NoLink { ref link, .. }) if link == "no-such-link"),
        "{missing_err:?}"
    );
}
