//! Telegram text: HTML escaping, `[prefix] ` tagging, splitting under 4096 characters, and the one-line event messages.
//!
//! Everything here produces Telegram-HTML (`parse_mode: HTML`): outside text (prefixes,
//! phase names, failure details, reasons) is escaped, markup is ours.
//!
//! Lengths are counted in UTF-16 code units of the HTML source. Telegram measures the
//! text *after* entity parsing, in UTF-16 units, so the source length is always at least
//! that: a part that fits here fits there, even when it is all emoji or all `&amp;`.

/// Telegram's limit on one message's text.
pub const TELEGRAM_LIMIT: usize = 4096;

/// Escapes the three characters Telegram's HTML parser requires (`&`, `<`, `>`) and `"`
/// (harmless outside attributes, required inside them).
pub fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
    out
}

/// The tag every message of an instance starts with: `[<escaped prefix>] `.
pub fn tag_prefix(prefix: &str) -> String {
    format!("[{}] ", escape_html(prefix))
}

/// `[<escaped prefix>] text` (`text` is already HTML).
pub fn tag(prefix: &str, text: &str) -> String {
    format!("{}{text}", tag_prefix(prefix))
}

/// Length as Telegram counts it, at its strictest (UTF-16 code units).
pub fn telegram_len(text: &str) -> usize {
    text.chars().map(char::len_utf16).sum()
}

/// Splits HTML `text` into parts of at most `max` UTF-16 units, in order.
///
/// A part ends at the last paragraph break (`\n\n`) that keeps it at least half full,
/// else at the last line break under the same rule, else as late as fits. No cut lands
/// inside an HTML tag or entity; a tag open at a cut is closed at the end of the part
/// and reopened at the start of the next. Whitespace at the start of each following
/// part is dropped (Telegram would trim it anyway). Empty or all-blank text gives no part.
pub fn split_message(text: &str, max: usize) -> Vec<String> {
    split_with_reserve(text, max, 0)
}

/// Splits `text` so that every part carries the `[prefix] ` tag and stays within `max`.
pub fn split_tagged(prefix: &str, text: &str, max: usize) -> Vec<String> {
    let tag = tag_prefix(prefix);
    split_with_reserve(text, max, telegram_len(&tag))
        .into_iter()
        .map(|part| format!("{tag}{part}"))
        .collect()
}

/// An open tag carried across a cut: its name (to close it) and its source (to reopen it).
#[derive(Debug, Clone, PartialEq)]
struct OpenTag {
    name: String,
    source: String,
}

fn split_with_reserve(text: &str, max: usize, reserve: usize) -> Vec<String> {
    // Below this a part cannot make progress; the caller asked for the impossible.
    let max = max.saturating_sub(reserve).max(16);
    let mut parts = Vec::new();
    let mut rest = text.trim_start();
    let mut carried: Vec<OpenTag> = Vec::new();
    while !rest.trim().is_empty() {
        let reopen: String = carried.iter().map(|t| t.source.as_str()).collect();
        let reopen_len = telegram_len(&reopen);
        if reopen_len + telegram_len(rest) <= max {
            parts.push(format!("{reopen}{rest}"));
            break;
        }
        // The closing tags depend on where we cut, and the cut on the room they leave:
        // shrink the budget until both fit. Tags are few, so this settles in a step or two.
        let mut budget = max.saturating_sub(reopen_len).max(8);
        let (cut, open_after, closers) = loop {
            let cut = choose_cut(rest, budget);
            let open_after = open_tags_after(&carried, &rest[..cut]);
            let closers: String = open_after
                .iter()
                .rev()
                .map(|t| format!("</{}>", t.name))
                .collect();
            let total = reopen_len + telegram_len(rest[..cut].trim_end()) + telegram_len(&closers);
            if total <= max || budget <= 8 {
                break (cut, open_after, closers);
            }
            budget = budget.saturating_sub(total - max).max(8);
        };
        let body = rest[..cut].trim_end();
        parts.push(format!("{reopen}{body}{closers}"));
        carried = open_after;
        rest = rest[cut..].trim_start();
    }
    parts
}

/// Byte index where the part starting at `text` ends, given `budget` UTF-16 units:
/// always > 0, on a char boundary, never inside a tag or entity (unless one tag alone
/// is longer than the budget).
fn choose_cut(text: &str, budget: usize) -> usize {
    // The longest prefix that fits.
    let mut units = 0;
    let mut hard = text.len();
    for (i, c) in text.char_indices() {
        units += c.len_utf16();
        if units > budget {
            hard = i;
            break;
        }
    }
    if hard == 0 {
        // A single char wider than the budget: take it anyway to make progress.
        return text.chars().next().map_or(text.len(), char::len_utf8);
    }
    let window = &text[..hard];
    let half = budget / 2;
    for sep in ["\n\n", "\n"] {
        let mut search_end = window.len();
        while let Some(at) = window[..search_end].rfind(sep) {
            if telegram_len(&window[..at]) < half {
                break;
            }
            if is_safe_cut(text, at) {
                return at;
            }
            search_end = at;
        }
    }
    // Hard cut: back off to before any tag or entity the limit falls in.
    let mut cut = hard;
    while cut > 0 && !is_safe_cut(text, cut) {
        cut = prev_boundary(text, cut);
    }
    if cut == 0 {
        hard
    } else {
        cut
    }
}

fn prev_boundary(text: &str, mut i: usize) -> usize {
    i -= 1;
    while !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// Whether cutting `text` at byte `at` keeps every tag `<...>` and entity `&...;` whole.
fn is_safe_cut(text: &str, at: usize) -> bool {
    let before = &text[..at];
    let after = &text[at..];
    // Inside a tag: a `<` with no `>` after it before the cut, closed after the cut.
    if let Some(lt) = before.rfind('<') {
        if !before[lt..].contains('>')
            && after.find('>').is_some_and(|gt| !after[..gt].contains('<'))
        {
            return false;
        }
    }
    // Inside an entity: `&` then only name characters up to the cut, and a `;` ends it after.
    if let Some(amp) = before.rfind('&') {
        let name_before = &before[amp + 1..];
        if name_before
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '#')
        {
            let name_after: String = after
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '#')
                .collect();
            let tail = &after[name_after.len()..];
            if tail.starts_with(';') && name_before.len() + name_after.len() <= 32 {
                return false;
            }
        }
    }
    true
}

/// The tags still open after `chunk`, given those open before it.
fn open_tags_after(carried: &[OpenTag], chunk: &str) -> Vec<OpenTag> {
    let mut stack = carried.to_vec();
    let mut rest = chunk;
    while let Some(lt) = rest.find('<') {
        let Some(gt) = rest[lt..].find('>') else {
            break;
        };
        let source = &rest[lt..lt + gt + 1];
        let inner = &source[1..source.len() - 1];
        if let Some(name) = inner.strip_prefix('/') {
            let name = name.trim().to_ascii_lowercase();
            if let Some(pos) = stack.iter().rposition(|t| t.name == name) {
                stack.truncate(pos);
            }
        } else if !inner.ends_with('/') {
            let name: String = inner
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                .collect::<String>()
                .to_ascii_lowercase();
            if !name.is_empty() {
                stack.push(OpenTag {
                    name,
                    source: source.to_string(),
                });
            }
        }
        rest = &rest[lt + gt + 1..];
    }
    stack
}

// ---------------------------------------------------------------------------------------
// Message formats (behaviour.md §9.3; the status messages are `status_report`'s)

pub fn format_phase_start(phase: u32, name: &str) -> String {
    format!("🚀 <b>Phase {phase} Starting</b>: {}", escape_html(name))
}

pub fn format_phase_complete(phase: u32, cost_usd: f64) -> String {
    format!("✅ <b>Phase {phase} Complete</b> (cost: ${cost_usd:.2})")
}

pub fn format_escalation(phase: u32, category: &str, details: &str, action: &str) -> String {
    [
        format!("🔴 <b>Escalation — Phase {phase}</b>"),
        String::new(),
        format!("<b>Category:</b> {}", escape_html(category)),
        format!("<b>Details:</b> {}", escape_html(details)),
        format!("<b>Action taken:</b> {}", escape_html(action)),
        String::new(),
        "<i>Execution paused — awaiting your response.</i>".to_string(),
    ]
    .join("\n")
}

pub fn format_restart(phase: u32, reason: &str) -> String {
    format!(
        "🔄 <b>Orchestrator Restarted</b>\nResuming from: Phase {phase}\nReason: {}",
        escape_html(reason)
    )
}

/// `💓 Still running — Phase N in progress` (`?` when no phase is unfinished).
pub fn format_heartbeat(phase: Option<u32>) -> String {
    let phase = phase.map_or_else(|| "?".to_string(), |p| p.to_string());
    format!("💓 Still running — Phase {phase} in progress")
}

pub fn format_help() -> String {
    [
        "<b>PIV Orchestrator — commands</b>",
        "",
        "/status — this project's status",
        "/status all — every running project",
        "/status &lt;prefix&gt; — one project's status",
        "/go [prefix] — start execution",
        "/pause [prefix] — pause after the current step",
        "/resume [prefix] — resume execution",
        "/cost [prefix] — what the projects spent: today, 7 days, this month",
        "/preflight [prefix] — the credential and environment check",
        "/logs [prefix] [n] — the last n lines of the log (20 by default)",
        "/create_prd [prefix] — start a PRD conversation with Claude (/create-prd); \
         your messages are relayed to it",
        "/end_prd [prefix] — end the PRD conversation",
        "/help — this list",
        "",
        "<i>Without a prefix a command goes to the only running project; with several, name one. \
         In a project's forum topic a command is for that project, and so is a message while \
         its PRD conversation is open.</i>",
    ]
    .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Strips markup so tests can compare the visible text.
    fn undo_split(parts: &[String]) -> String {
        parts.concat()
    }

    fn no_ws(s: &str) -> String {
        s.chars().filter(|c| !c.is_whitespace()).collect()
    }

    /// Every tag and entity in `part` is whole.
    fn assert_well_formed(part: &str) {
        let mut depth = 0i32;
        for c in part.chars() {
            match c {
                '<' => {
                    assert_eq!(depth, 0, "nested < in {part:?}");
                    depth += 1;
                }
                '>' => {
                    assert_eq!(depth, 1, "stray > in {part:?}");
                    depth -= 1;
                }
                _ => {}
            }
        }
        assert_eq!(depth, 0, "tag cut at the end of {part:?}");
        for (i, _) in part.match_indices('&') {
            let tail = &part[i..];
            let semi = tail
                .find(';')
                .unwrap_or_else(|| panic!("entity cut in {part:?}"));
            assert!(semi <= 10, "entity cut in {part:?}");
        }
    }

    #[test]
    fn escape_html_escapes_markup_characters() {
        let cases = [
            ("plain", "plain"),
            ("a & b", "a &amp; b"),
            ("<b>x</b>", "&lt;b&gt;x&lt;/b&gt;"),
            ("\"q\"", "&quot;q&quot;"),
            ("&amp;", "&amp;amp;"),
            ("émoji 🚀", "émoji 🚀"),
        ];
        for (input, want) in cases {
            assert_eq!(escape_html(input), want, "{input}");
        }
    }

    #[test]
    fn tag_escapes_the_prefix_only() {
        assert_eq!(tag("a<b", "<b>x</b>"), "[a&lt;b] <b>x</b>");
        assert_eq!(tag("proj", "hi"), "[proj] hi");
    }

    #[test]
    fn split_empty_and_blank_give_nothing() {
        assert!(split_message("", 100).is_empty());
        assert!(split_message("  \n\n ", 100).is_empty());
        assert!(split_tagged("p", "", 100).is_empty());
    }

    #[test]
    fn short_text_is_one_part() {
        assert_eq!(split_message("hello", 100), vec!["hello"]);
        assert_eq!(split_tagged("p", "hello", 100), vec!["[p] hello"]);
    }

    #[test]
    fn cuts_at_paragraph_then_line_then_hard() {
        let para = format!("{}\n\n{}", "a".repeat(60), "b".repeat(60));
        assert_eq!(
            split_message(&para, 100),
            vec!["a".repeat(60), "b".repeat(60)]
        );

        let line = format!("{}\n{}", "a".repeat(60), "b".repeat(60));
        assert_eq!(
            split_message(&line, 100),
            vec!["a".repeat(60), "b".repeat(60)]
        );

        let hard = "x".repeat(250);
        let parts = split_message(&hard, 100);
        assert_eq!(
            parts,
            vec!["x".repeat(100), "x".repeat(100), "x".repeat(50)]
        );
    }

    #[test]
    fn paragraph_break_too_early_is_ignored_for_a_line_break() {
        // "\n\n" at 10 < max/2; "\n" at 70 is used instead.
        let text = format!(
            "{}\n\n{}\n{}",
            "a".repeat(10),
            "b".repeat(58),
            "c".repeat(60)
        );
        let parts = split_message(&text, 100);
        assert_eq!(
            parts[0],
            format!("{}\n\n{}", "a".repeat(10), "b".repeat(58))
        );
        assert_eq!(parts[1], "c".repeat(60));
    }

    #[test]
    fn never_cuts_inside_an_entity() {
        for offset in 0..12 {
            let text = format!("{}{}", "x".repeat(95 + offset), "&amp;".repeat(40));
            let parts = split_message(&text, 100);
            for p in &parts {
                assert!(telegram_len(p) <= 100);
                assert_well_formed(p);
            }
            assert_eq!(undo_split(&parts), text);
        }
    }

    #[test]
    fn never_cuts_inside_a_tag_and_reopens_it() {
        for offset in 0..20 {
            let text = format!(
                "{}<a href=\"https://example.com/x\">{}</a> tail",
                "x".repeat(80 + offset),
                "y".repeat(150)
            );
            let parts = split_message(&text, 100);
            for p in &parts {
                assert!(telegram_len(p) <= 100, "{p:?}");
                assert_well_formed(p);
                let opens = p.matches("<a ").count();
                let closes = p.matches("</a>").count();
                assert_eq!(opens, closes, "balanced in {p:?}");
            }
            let visible: String = parts
                .iter()
                .map(|p| {
                    p.replace("<a href=\"https://example.com/x\">", "")
                        .replace("</a>", "")
                })
                .collect();
            assert_eq!(
                no_ws(&visible),
                no_ws(&format!(
                    "{}{} tail",
                    "x".repeat(80 + offset),
                    "y".repeat(150)
                ))
            );
        }
    }

    #[test]
    fn nested_bold_italic_are_closed_in_reverse_and_reopened() {
        let text = format!("<b><i>{}</i></b>", "z".repeat(150));
        let parts = split_message(&text, 100);
        assert!(parts.len() >= 2);
        assert!(
            parts[0].starts_with("<b><i>") && parts[0].ends_with("</i></b>"),
            "{:?}",
            parts[0]
        );
        assert!(
            parts[1].starts_with("<b><i>") && parts[1].ends_with("</i></b>"),
            "{:?}",
            parts[1]
        );
        for p in &parts {
            assert!(telegram_len(p) <= 100);
        }
    }

    #[test]
    fn counts_utf16_units_so_emoji_parts_fit() {
        let text = "🚀".repeat(3000); // 6000 UTF-16 units
        let parts = split_message(&text, TELEGRAM_LIMIT);
        assert_eq!(parts.len(), 2);
        for p in &parts {
            assert!(telegram_len(p) <= TELEGRAM_LIMIT);
        }
        assert_eq!(parts.concat(), text);
    }

    #[test]
    fn large_realistic_text_keeps_order_limits_and_tags() {
        let mut text = String::new();
        for i in 0..600 {
            text.push_str(&format!(
                "<b>Line {i}</b>: {} &amp; more\n",
                escape_html("details <with> \"markup\"")
            ));
            if i % 7 == 0 {
                text.push('\n');
            }
        }
        let parts = split_tagged("proj<1>", &text, TELEGRAM_LIMIT);
        assert!(parts.len() > 1);
        let mut seen = 0;
        for p in &parts {
            assert!(telegram_len(p) <= TELEGRAM_LIMIT);
            assert!(p.starts_with("[proj&lt;1&gt;] "), "{}", &p[..20]);
            assert_well_formed(p);
            for line in p.lines().filter(|l| l.contains("Line ")) {
                let n: usize = line
                    .split("Line ")
                    .nth(1)
                    .unwrap()
                    .split('<')
                    .next()
                    .unwrap()
                    .parse()
                    .unwrap();
                assert_eq!(n, seen, "order kept");
                seen += 1;
            }
        }
        assert_eq!(seen, 600);
        let joined: String = parts
            .iter()
            .map(|p| p.strip_prefix("[proj&lt;1&gt;] ").unwrap())
            .collect();
        assert_eq!(no_ws(&joined), no_ws(&text));
    }

    #[test]
    fn tiny_max_still_makes_progress() {
        let parts = split_message(&"q".repeat(100), 1);
        assert!(!parts.is_empty());
        assert_eq!(parts.concat(), "q".repeat(100));
    }

    #[test]
    fn one_line_formats() {
        assert_eq!(
            format_phase_start(3, "Auth <api>"),
            "🚀 <b>Phase 3 Starting</b>: Auth &lt;api&gt;"
        );
        assert_eq!(
            format_phase_complete(1, 0.5),
            "✅ <b>Phase 1 Complete</b> (cost: $0.50)"
        );
        assert_eq!(
            format_restart(2, "crash"),
            "🔄 <b>Orchestrator Restarted</b>\nResuming from: Phase 2\nReason: crash"
        );
        assert_eq!(
            format_heartbeat(Some(4)),
            "💓 Still running — Phase 4 in progress"
        );
        assert_eq!(
            format_heartbeat(None),
            "💓 Still running — Phase ? in progress"
        );
        assert_eq!(
            format_escalation(1, "prd_gap", "x<y", "Escalated"),
            "🔴 <b>Escalation — Phase 1</b>\n\n<b>Category:</b> prd_gap\n<b>Details:</b> x&lt;y\n<b>Action taken:</b> Escalated\n\n<i>Execution paused — awaiting your response.</i>"
        );
    }

    #[test]
    fn help_names_every_command_and_is_well_formed() {
        let help = format_help();
        for cmd in [
            "/status",
            "/status all",
            "/go",
            "/pause",
            "/resume",
            "/help",
        ] {
            assert!(help.contains(cmd), "{cmd}");
        }
        assert_well_formed(&help);
    }
}
