//! Fuzz target: the signal file parser — no panic, size limit honoured, and an accepted signal survives to_json/parse unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use piv::core::signal::{parse_signal, MAX_SIGNAL_BYTES};

fuzz_target!(|data: &[u8]| {
    let Ok(message) = parse_signal(data) else {
        return;
    };
    assert!(data.len() as u64 <= MAX_SIGNAL_BYTES);
    let again = parse_signal(message.to_json().as_bytes()).expect("own output parses");
    assert_eq!(again, message);
});
