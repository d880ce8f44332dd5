//! What the bot owner reads from an instance's files for the control room's commands:
//! the project a forum topic belongs to (the bot's topic store), `/preflight` (the
//! manifest's preflight section) and `/logs` (the log's last lines, the bot token taken
//! out). The answers' texts are `core::room_replies`'.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::core::room_replies::{log_line_count, logs_reply, preflight_reply};
use crate::core::telegram_text::escape_html;
use crate::io::telegram::TelegramClient;
use crate::io::topic_store::TopicStore;

/// The project (prefix) whose forum topic `topic` is in `chat_id`, from the topics
/// remembered in `bot_dir`.
pub async fn project_of_topic(bot_dir: &Path, chat_id: i64, topic: Option<i64>) -> Option<String> {
    topic?;
    let store = TopicStore::new(bot_dir);
    let topics = tokio::task::spawn_blocking(move || store.topics_of_chat(chat_id))
        .await
        .ok()?
        .map_err(|e| tracing::warn!(error = %e, "cannot read the remembered topics"))
        .ok()?;
    let by_prefix: BTreeMap<String, i64> = topics
        .into_iter()
        .map(|t| (t.prefix, t.thread_id))
        .collect();
    crate::core::forum::project_of_topic(topic, &by_prefix).map(str::to_string)
}

/// `/preflight`: the manifest's preflight section of the project in `dir`.
pub async fn preflight_of(dir: PathBuf) -> String {
    let read = tokio::task::spawn_blocking(move || {
        crate::io::manifest_file::read(&dir)
            .map_err(|e| e.to_string())
            .and_then(|m| m.view().map_err(|e| e.to_string()))
            .map(|view| preflight_reply(view.preflight.as_ref()))
    })
    .await;
    match read {
        Ok(Ok(reply)) => reply,
        Ok(Err(e)) => format!("⚠️ cannot read the manifest: {}", escape_html(&e)),
        Err(e) => format!("⚠️ cannot read the manifest: {e}"),
    }
}

/// `/logs`: the last lines of the log of the project in `dir`, the bot token taken out
/// (`client` knows it).
pub async fn logs_of(dir: PathBuf, asked: Option<usize>, client: &TelegramClient) -> String {
    let n = log_line_count(asked);
    let path = dir.join(".agents").join("orchestrator.log");
    let lines =
        tokio::task::spawn_blocking(move || crate::io::log_file::tail_lines(&path, n)).await;
    match lines {
        Ok(Ok(lines)) => {
            let redacted: Vec<String> = lines.iter().map(|l| client.redact(l)).collect();
            logs_reply(&redacted).concat()
        }
        Ok(Err(e)) => format!(
            "⚠️ cannot read the log: {}",
            escape_html(&client.redact(&e.to_string()))
        ),
        Err(e) => format!("⚠️ cannot read the log: {e}"),
    }
}
