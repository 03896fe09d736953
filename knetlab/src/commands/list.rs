//! `knetlab list`: scenarios with their one-line summaries, and on stderr where they
//! come from.

use crate::scenarios::{Catalog, stem};

pub fn main(catalog: &Catalog) -> u8 {
    eprintln!("scenarios: {catalog}");
    let files = catalog.all();
    let width = files
        .iter()
        .filter_map(|p| stem(p))
        .map(|s| s.len())
        .max()
        .unwrap_or(0);
    let mut code = 0;
    for file in files {
        let name = stem(&file).unwrap_or_default();
        match sim::scenario::load(&file) {
            Ok(s) => println!("{name:width$}  {}", s.summary),
            Err(e) => {
                println!("{name:width$}  (invalid: {e})");
                code = 2;
            }
        }
    }
    code
}
