//! Fuzz target: the stream-json line parser and the session accumulator — no panic on any line sequence.
#![no_main]

use libfuzzer_sys::fuzz_target;
use piv::core::stream::{parse_line, ExitInfo, SessionAccumulator};

fuzz_target!(|data: &[u8]| {
    let mut acc = SessionAccumulator::new();
    for line in data.split(|&b| b == b'\n') {
        match parse_line(line) {
            Ok(event) => acc.feed(event),
            Err(e) => {
                let _ = e.to_string();
                acc.note_malformed();
            }
        }
    }
    let outcome = acc.finish(ExitInfo {
        code: Some(data.first().copied().unwrap_or(0) as i32 % 3),
        ..ExitInfo::default()
    });
    if let Some(error) = &outcome.error {
        let _ = (error.message(), error.error_text(), error.kind());
    }
});
