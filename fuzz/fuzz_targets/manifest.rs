//! Fuzz target: the manifest reader — parse, typed view, next action, and a to_yaml/parse round trip that must be stable.
#![no_main]

use libfuzzer_sys::fuzz_target;
use piv::core::manifest::Manifest;
use piv::core::next_action::next_action;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let Ok(manifest) = Manifest::parse(&text) else {
        return;
    };
    let view = manifest.view();
    if let Ok(view) = &view {
        let _ = next_action(view);
    }
    // Whatever piv writes back must read back as the same document.
    let written = manifest.to_yaml();
    let reread = Manifest::parse(&written)
        .unwrap_or_else(|e| panic!("piv cannot read what it wrote: {e}\n{written}"));
    assert_eq!(reread.to_yaml(), written, "round trip changed the document");
    assert_eq!(reread.view().is_ok(), view.is_ok(), "round trip changed validity");
});
