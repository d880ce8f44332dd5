//! The PIV-Automator-Hooks parser: `## PIV-Automator-Hooks` then `key: value` lines; the last block wins.
//!
//! The slash commands end their output with this block to tell the orchestrator things a
//! session's exit status cannot (`preflight_status`, `credentials_missing`,
//! `validation_status`). The format is the earlier version's (behaviour.md §5); piv is also
//! tolerant of what agents actually emit: CRLF line ends, extra spaces around the colon,
//! and the block wrapped in a Markdown code fence.

use std::collections::BTreeMap;

/// The exact header that opens a hooks block.
pub const HOOKS_HEADER: &str = "## PIV-Automator-Hooks";

/// Parses the last hooks block of `text` into key → value. No block (or empty text) gives
/// an empty map; lines that are not `key: value` (lowercase letters and `_` keys, non-empty
/// value) are skipped; the block ends at the next `## ` heading or a closing code fence;
/// a later duplicate key wins.
pub fn parse_hooks(text: &str) -> BTreeMap<String, String> {
    let mut hooks = BTreeMap::new();
    let Some(start) = text.rfind(HOOKS_HEADER) else {
        return hooks;
    };
    let block = &text[start + HOOKS_HEADER.len()..];
    // Text after the header on its own line counts as the block's first line, as before.
    let mut seen_entry = false;
    for raw in block.split('\n') {
        let line = raw.trim();
        if line.is_empty() {
            continue;
        }
        if line.starts_with("## ") {
            break;
        }
        if line.starts_with("```") {
            // An opening fence right after the header is skipped; a fence after entries
            // closes the block.
            if seen_entry {
                break;
            }
            continue;
        }
        if let Some((key, value)) = parse_line(line) {
            hooks.insert(key.to_string(), value.to_string());
            seen_entry = true;
        }
    }
    hooks
}

/// One `key: value` line (already trimmed), or `None` when it is not one.
fn parse_line(line: &str) -> Option<(&str, &str)> {
    let (key, value) = line.split_once(':')?;
    let key = key.trim_end();
    let value = value.trim();
    let key_ok = !key.is_empty() && key.bytes().all(|b| b.is_ascii_lowercase() || b == b'_');
    (key_ok && !value.is_empty()).then_some((key, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// (case name, input text, expected pairs)
    type Case = (
        &'static str,
        &'static str,
        &'static [(&'static str, &'static str)],
    );

    #[test]
    fn parses_hooks_and_edge_cases() {
        let cases: &[Case] = &[
            ("empty text", "", &[]),
            ("no header", "all done\nstatus: ok\n", &[]),
            (
                "basic block",
                "Done.\n\n## PIV-Automator-Hooks\npreflight_status: passed\ncredentials_missing: none\n",
                &[("preflight_status", "passed"), ("credentials_missing", "none")],
            ),
            (
                "malformed lines skipped",
                "## PIV-Automator-Hooks\nNot A Hook\nBad-Key: x\nempty:\nok_key: yes\n- bullet: no\n",
                &[("ok_key", "yes")],
            ),
            (
                "last block wins",
                "## PIV-Automator-Hooks\na: 1\nb: 2\n\ntext\n## PIV-Automator-Hooks\na: 3\n",
                &[("a", "3")],
            ),
            (
                "stops at next h2",
                "## PIV-Automator-Hooks\na: 1\n## Summary\nb: 2\n",
                &[("a", "1")],
            ),
            (
                "h3 does not stop",
                "## PIV-Automator-Hooks\na: 1\n### note\nb: 2\n",
                &[("a", "1"), ("b", "2")],
            ),
            (
                "values keep colons",
                "## PIV-Automator-Hooks\nnext_arg: Phase 2: Telegram: bot\nurl: http://x:1/y\n",
                &[("next_arg", "Phase 2: Telegram: bot"), ("url", "http://x:1/y")],
            ),
            (
                "later duplicate wins",
                "## PIV-Automator-Hooks\na: 1\na: 2\n",
                &[("a", "2")],
            ),
            (
                "crlf",
                "ok\r\n## PIV-Automator-Hooks\r\nvalidation_status: fail\r\nphase: 2\r\n",
                &[("validation_status", "fail"), ("phase", "2")],
            ),
            (
                "extra spaces around colon and indentation",
                "## PIV-Automator-Hooks\n   a   :    spaced value   \nb:tight\n",
                &[("a", "spaced value"), ("b", "tight")],
            ),
            (
                "code fence around block",
                "```\n## PIV-Automator-Hooks\nvalidation_status: pass\n```\nlater: ignored\n",
                &[("validation_status", "pass")],
            ),
            (
                "code fence after header",
                "## PIV-Automator-Hooks\n```yaml\nvalidation_status: partial\nscenarios: 3\n```\ntrailing: x\n",
                &[("validation_status", "partial"), ("scenarios", "3")],
            ),
            (
                "header text on same line is the first line",
                "## PIV-Automator-Hooks a: 1\nb: 2\n",
                &[("a", "1"), ("b", "2")],
            ),
            ("header only", "## PIV-Automator-Hooks", &[]),
        ];
        for (name, text, want) in cases {
            assert_eq!(parse_hooks(text), map(want), "case: {name}");
        }
    }
}
