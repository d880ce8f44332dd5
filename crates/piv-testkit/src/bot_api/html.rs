//! Telegram's HTML parse mode as the stand-in checks it: the tags Telegram accepts, entities decoded, and the visible text whose length the 4096 limit counts.

const TELEGRAM_TAGS: &[&str] = &[
    "b",
    "strong",
    "i",
    "em",
    "u",
    "ins",
    "s",
    "strike",
    "del",
    "a",
    "code",
    "pre",
    "tg-spoiler",
    "span",
    "tg-emoji",
    "blockquote",
];

/// Parses Telegram-flavoured HTML as the Bot API does and returns the visible text, or
/// the reason Telegram would give for refusing it.
pub fn parse_telegram_html(html: &str) -> Result<String, String> {
    let mut visible = String::with_capacity(html.len());
    let mut stack: Vec<String> = Vec::new();
    let mut i = 0;
    while i < html.len() {
        let rest = &html[i..];
        let c = rest.chars().next().expect("in bounds");
        match c {
            '<' => {
                let Some(end) = rest.find('>') else {
                    return Err(format!("Unclosed start tag at byte offset {i}"));
                };
                let inner = &rest[1..end];
                if let Some(name) = inner.strip_prefix('/') {
                    let name = name.trim().to_ascii_lowercase();
                    match stack.pop() {
                        Some(open) if open == name => {}
                        Some(open) => {
                            return Err(format!(
                                "Can't find end tag corresponding to start tag \"{open}\""
                            ))
                        }
                        None => return Err(format!("Unexpected end tag at byte offset {i}")),
                    }
                } else {
                    let name: String = inner
                        .chars()
                        .take_while(|ch| !ch.is_whitespace() && *ch != '/')
                        .collect::<String>()
                        .to_ascii_lowercase();
                    if !TELEGRAM_TAGS.contains(&name.as_str()) {
                        return Err(format!(
                            "Unsupported start tag \"{name}\" at byte offset {i}"
                        ));
                    }
                    stack.push(name);
                }
                i += end + 1;
            }
            '&' => {
                let entity_end = rest[1..]
                    .char_indices()
                    .take(10)
                    .find(|(_, ch)| !(ch.is_ascii_alphanumeric() || *ch == '#'))
                    .filter(|(_, ch)| *ch == ';')
                    .map(|(j, _)| j + 1);
                let decoded = entity_end.and_then(|e| {
                    let name = &rest[1..e];
                    match name {
                        "lt" => Some('<'),
                        "gt" => Some('>'),
                        "amp" => Some('&'),
                        "quot" => Some('"'),
                        _ => name
                            .strip_prefix("#x")
                            .or_else(|| name.strip_prefix("#X"))
                            .map(|h| u32::from_str_radix(h, 16))
                            .or_else(|| name.strip_prefix('#').map(str::parse::<u32>))
                            .and_then(Result::ok)
                            .and_then(char::from_u32),
                    }
                    .map(|ch| (ch, e + 1))
                });
                match decoded {
                    Some((ch, len)) => {
                        visible.push(ch);
                        i += len;
                    }
                    None => {
                        // Telegram keeps a bare `&` as text.
                        visible.push('&');
                        i += 1;
                    }
                }
            }
            c => {
                visible.push(c);
                i += c.len_utf8();
            }
        }
    }
    if let Some(open) = stack.pop() {
        return Err(format!(
            "Can't find end tag corresponding to start tag \"{open}\""
        ));
    }
    Ok(visible)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn telegram_html_parsing() {
        let cases = [
            ("plain", Ok("plain")),
            ("<b>bold</b> &amp; <i>it</i>", Ok("bold & it")),
            ("&lt;x&gt; &#65;&#x42;", Ok("<x> AB")),
            ("a & b", Ok("a & b")),
            ("<a href=\"http://x\">l</a>", Ok("l")),
            ("<b>open", Err(())),
            ("<b>x</i>", Err(())),
            ("<foo>x</foo>", Err(())),
            ("<b", Err(())),
            ("x</b>", Err(())),
        ];
        for (input, want) in cases {
            let got = parse_telegram_html(input);
            match want {
                Ok(v) => assert_eq!(got.as_deref(), Ok(v), "{input}"),
                Err(()) => assert!(got.is_err(), "{input}: {got:?}"),
            }
        }
    }
}
