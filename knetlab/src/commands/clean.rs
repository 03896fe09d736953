//! `knetlab clean`: sweep what earlier runs left, found by knetlab's prefix only.

pub fn main(force: bool) -> u8 {
    if !harness::netns::have_privileges() {
        eprintln!("error: clean removes network namespaces and needs root: run it with sudo");
        return 2;
    }
    let report = harness::sweep::clean(force);
    print!("{report}");
    if report.errors.is_empty() { 0 } else { 2 }
}
