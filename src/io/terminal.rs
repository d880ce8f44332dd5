//! The terminal as piv's user interface: lines to stdout and warnings to stderr that never
//! panic. After a hangup (terminal closed, ssh dropped) or with the output piped into a
//! reader that went away, a write fails; `println!` would then panic mid-run, or in the
//! middle of the ordered shutdown. A line that cannot be shown is dropped: the log and
//! the chat still have it.

use std::io::Write;

/// One line on stdout; a failed write is ignored.
pub fn line(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{text}");
    let _ = out.flush();
}

/// One line on stderr; a failed write is ignored.
pub fn warn(text: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{text}");
}
