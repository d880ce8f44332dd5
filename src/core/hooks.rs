//! The PIV-Automator-Hooks parser: `## PIV-Automator-Hooks` then `key: value` lines; the last block wins.
