//! `cargo xtask list`: scenarios with their one-line summaries.

use crate::scenario_files;

pub fn main() -> u8 {
    let files = scenario_files::all();
    let width = files
        .iter()
        .filter_map(|p| scenario_files::stem(p))
        .map(|s| s.len())
        .max()
        .unwrap_or(0);
    let mut code = 0;
    for file in files {
        let name = scenario_files::stem(&file).unwrap_or_default();
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
