//! `piv-fake-claude`: a scripted stand-in for the `claude` CLI (logic in
//! `piv_testkit::fake_claude`), for the tests, the benches, the demo, and trying piv
//! without an account (`cargo build --example piv-fake-claude`, then
//! `PIV_CLAUDE_BIN=target/debug/examples/piv-fake-claude`). An example, not a binary, so
//! `cargo install` never installs it; `piv_testkit::binaries` finds and builds it.

fn main() {
    std::process::exit(piv_testkit::fake_claude::main_entry());
}
