//! The answers of the chat commands that show a project's details: `/preflight` (the
//! manifest's credential and environment check, in the earlier version's format,
//! behaviour.md §9.1) and `/logs` (the last lines of the instance's log in `<pre>` blocks).

use crate::core::manifest::Preflight;
use crate::core::telegram_text::{escape_html, split_message, TELEGRAM_LIMIT};

/// How many log lines `/logs` shows when no count is given, and at most.
pub const DEFAULT_LOG_LINES: usize = 20;
pub const MAX_LOG_LINES: usize = 200;

/// `/preflight`: the manifest's preflight section, or that none was run.
pub fn preflight_reply(preflight: Option<&Preflight>) -> String {
    let Some(p) = preflight else {
        return "⚠️ Preflight has not been run yet. Run /preflight in Claude Code first."
            .to_string();
    };
    let status = p.status.as_deref().unwrap_or("unknown");
    let icon = if status == "passed" { "✅" } else { "🔴" };
    let mut lines = vec![format!(
        "<b>Preflight Status:</b> {icon} {}",
        escape_html(status)
    )];
    lines.push(format!(
        "<b>Credentials verified:</b> {}",
        p.credentials_verified.unwrap_or(0)
    ));
    let technologies = if p.technologies_checked.is_empty() {
        "none".to_string()
    } else {
        escape_html(&p.technologies_checked.join(", "))
    };
    lines.push(format!("<b>Technologies:</b> {technologies}"));
    if let Some(notes) = p.notes.as_deref().filter(|n| !n.trim().is_empty()) {
        lines.push(format!("<b>Notes:</b> {}", escape_html(notes)));
    }
    if let Some(at) = &p.completed_at {
        lines.push(format!("<i>Checked: {}</i>", escape_html(at)));
    }
    lines.join("\n")
}

/// The number of lines `/logs` asked for: the default when absent, capped, at least one.
pub fn log_line_count(asked: Option<usize>) -> usize {
    asked.unwrap_or(DEFAULT_LOG_LINES).clamp(1, MAX_LOG_LINES)
}

/// `/logs`: the given lines (already redacted by the reader) in `<pre>` blocks, each
/// message within Telegram's limit (a block cut between messages is closed and reopened).
pub fn logs_reply(lines: &[String]) -> Vec<String> {
    if lines.iter().all(|l| l.trim().is_empty()) {
        return vec!["<i>The log is empty.</i>".to_string()];
    }
    let body = lines
        .iter()
        .map(|l| escape_html(l))
        .collect::<Vec<_>>()
        .join("\n");
    split_message(&format!("<pre>{body}</pre>"), TELEGRAM_LIMIT)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::telegram_text::telegram_len;

    #[test]
    fn preflight_in_the_earlier_format() {
        let passed = Preflight {
            status: Some("passed".into()),
            credentials_verified: Some(3),
            technologies_checked: vec!["stripe".into(), "postgres <16>".into()],
            notes: Some("all good".into()),
            completed_at: None,
        };
        let blocked = Preflight {
            status: Some("blocked".into()),
            ..Preflight::default()
        };
        let cases = [
            (
                None,
                "⚠️ Preflight has not been run yet. Run /preflight in Claude Code first.",
            ),
            (
                Some(&passed),
                "<b>Preflight Status:</b> ✅ passed\n<b>Credentials verified:</b> 3\n\
                 <b>Technologies:</b> stripe, postgres &lt;16&gt;\n<b>Notes:</b> all good",
            ),
            (
                Some(&blocked),
                "<b>Preflight Status:</b> 🔴 blocked\n<b>Credentials verified:</b> 0\n\
                 <b>Technologies:</b> none",
            ),
        ];
        for (input, want) in cases {
            assert_eq!(preflight_reply(input), want);
        }
    }

    #[test]
    fn log_counts_are_bounded() {
        let cases = [(None, 20), (Some(0), 1), (Some(5), 5), (Some(10_000), 200)];
        for (asked, want) in cases {
            assert_eq!(log_line_count(asked), want, "{asked:?}");
        }
    }

    #[test]
    fn logs_go_in_escaped_pre_blocks_within_the_limit() {
        let lines = vec!["a <b> & c".to_string(), "second".to_string()];
        assert_eq!(
            logs_reply(&lines),
            ["<pre>a &lt;b&gt; &amp; c\nsecond</pre>"]
        );
        assert_eq!(logs_reply(&[]), ["<i>The log is empty.</i>"]);

        let long: Vec<String> = (0..200)
            .map(|i| format!("line {i} {}", "x".repeat(60)))
            .collect();
        let parts = logs_reply(&long);
        assert!(parts.len() > 1);
        for part in &parts {
            assert!(telegram_len(part) <= TELEGRAM_LIMIT);
            assert!(
                part.starts_with("<pre>") && part.ends_with("</pre>"),
                "{part}"
            );
        }
        let joined: String = parts.concat();
        assert!(joined.contains("line 0 ") && joined.contains("line 199 "));
    }
}
