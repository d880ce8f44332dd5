//! The `piv-fake-claude` binary: a scripted stand-in for the `claude` CLI (logic in
//! `piv::testkit::fake_claude`), for the tests, the demo, and trying piv without an account.

fn main() {
    std::process::exit(piv::testkit::fake_claude::main_entry());
}
