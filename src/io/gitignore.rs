//! `.gitignore` files piv maintains: adding the lines it needs (once, under a comment
//! naming piv), never removing or reordering what the user wrote.

use std::path::Path;

/// Appends each of `lines` missing from the `.gitignore` at `path` (created if missing),
/// under `header` (a `# …` comment, written once). Returns whether the file changed.
pub fn ensure_lines(path: &Path, header: &str, lines: &[&str]) -> std::io::Result<bool> {
    let existing = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e),
    };
    let missing: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|e| !existing.lines().any(|l| l.trim() == *e))
        .collect();
    if missing.is_empty() {
        return Ok(false);
    }
    let mut text = existing;
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    if !text.lines().any(|l| l.trim() == header) {
        text.push_str(header);
        text.push('\n');
    }
    for e in missing {
        text.push_str(e);
        text.push('\n');
    }
    crate::io::atomic_file::write_with_mode(path, text.as_bytes(), 0o644)
        .map_err(std::io::Error::other)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds_only_what_is_missing_and_keeps_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".gitignore");
        std::fs::write(&path, "target/\n.env").unwrap();
        assert!(ensure_lines(&path, "# piv", &[".env", ".env*"]).unwrap());
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "target/\n.env\n# piv\n.env*\n"
        );
        assert!(!ensure_lines(&path, "# piv", &[".env", ".env*"]).unwrap());
        let fresh = dir.path().join("sub.gitignore");
        assert!(ensure_lines(&fresh, "# piv", &["a"]).unwrap());
        assert_eq!(std::fs::read_to_string(&fresh).unwrap(), "# piv\na\n");
    }
}
