//! Fuzz target: the PIV-Automator-Hooks parser — no panic, and every entry is a well-formed key with a trimmed non-empty value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use piv::core::hooks::parse_hooks;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    for (key, value) in parse_hooks(&text) {
        assert!(!key.is_empty());
        assert!(key.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'), "{key:?}");
        assert!(!value.is_empty());
        assert_eq!(value.trim(), value);
    }
});
