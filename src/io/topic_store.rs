//! The remembered forum topics of one bot, `topics.json` in that bot's directory of
//! `$PIV_HOME`: which topic (thread id) each project has in each chat, so a topic is created
//! once and reused across restarts and takeovers, and so the bot owner can tell which
//! project a command typed in a topic is for.
//!
//! Every read-modify-write happens under `topics.lock` (the file is shared by every instance
//! of the bot on this home). Entries are keyed by chat and project directory; fields piv
//! does not know are kept. An unparseable file is set aside and the store starts empty:
//! the worst case is one duplicate topic, never a lost message.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::io::atomic_file::{self, AtomicFileError};
use crate::io::lock::{lock_exclusive, LockError};

/// The file's name in the bot's directory.
pub const TOPICS_FILE: &str = "topics.json";
/// The lock of its read-modify-writes.
pub const TOPICS_LOCK: &str = "topics.lock";

/// Failures of the topic store; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum TopicStoreError {
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Write(#[from] AtomicFileError),
}

/// One project's topic in one chat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Topic {
    pub chat_id: i64,
    pub project_dir: String,
    /// The project's prefix when the topic was made (its name).
    pub prefix: String,
    pub thread_id: i64,
    /// Fields written by a newer piv, kept as they are.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Topic {
    pub fn new(chat_id: i64, project_dir: &str, prefix: &str, thread_id: i64) -> Self {
        Self {
            chat_id,
            project_dir: project_dir.to_string(),
            prefix: prefix.to_string(),
            thread_id,
            extra: Map::new(),
        }
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct TopicsFile {
    #[serde(default)]
    topics: Vec<Topic>,
    #[serde(flatten)]
    extra: Map<String, Value>,
}

/// The topics of one bot (see the module docs).
#[derive(Debug, Clone)]
pub struct TopicStore {
    dir: PathBuf,
}

impl TopicStore {
    /// The store in `bot_dir` (which must exist).
    pub fn new(bot_dir: &Path) -> Self {
        Self {
            dir: bot_dir.to_path_buf(),
        }
    }

    fn path(&self) -> PathBuf {
        self.dir.join(TOPICS_FILE)
    }

    fn load(&self) -> Result<TopicsFile, TopicStoreError> {
        let path = self.path();
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(TopicsFile::default()),
            Err(source) => return Err(TopicStoreError::Read { path, source }),
        };
        match serde_json::from_slice(&bytes) {
            Ok(file) => Ok(file),
            Err(e) => {
                let kept = atomic_file::quarantine(&path)?;
                tracing::warn!(
                    "{} unreadable ({e}); set aside as {}; topics will be created again",
                    path.display(),
                    kept.display()
                );
                Ok(TopicsFile::default())
            }
        }
    }

    fn update<T>(&self, change: impl FnOnce(&mut TopicsFile) -> T) -> Result<T, TopicStoreError> {
        let guard = lock_exclusive(&self.dir.join(TOPICS_LOCK))?;
        let mut file = self.load()?;
        let answer = change(&mut file);
        let json = serde_json::to_vec_pretty(&file).expect("topics serialise");
        atomic_file::write_with_mode(&self.path(), &json, 0o600)?;
        drop(guard);
        Ok(answer)
    }

    /// The topic of a project in a chat, if one was made.
    pub fn topic(&self, chat_id: i64, project_dir: &str) -> Result<Option<Topic>, TopicStoreError> {
        Ok(self
            .load()?
            .topics
            .into_iter()
            .find(|t| t.chat_id == chat_id && t.project_dir == project_dir))
    }

    /// Every remembered topic of a chat (for telling which project a topic is).
    pub fn topics_of_chat(&self, chat_id: i64) -> Result<Vec<Topic>, TopicStoreError> {
        Ok(self
            .load()?
            .topics
            .into_iter()
            .filter(|t| t.chat_id == chat_id)
            .collect())
    }

    /// Remembers a project's topic, replacing the one it had in that chat.
    pub fn remember(&self, topic: Topic) -> Result<(), TopicStoreError> {
        self.update(|file| {
            file.topics
                .retain(|t| !(t.chat_id == topic.chat_id && t.project_dir == topic.project_dir));
            file.topics.push(topic);
        })
    }

    /// Forgets a project's topic if it is still `thread_id` (a deleted topic); `false` when
    /// another instance already replaced it.
    pub fn forget(
        &self,
        chat_id: i64,
        project_dir: &str,
        thread_id: i64,
    ) -> Result<bool, TopicStoreError> {
        self.update(|file| {
            let before = file.topics.len();
            file.topics.retain(|t| {
                !(t.chat_id == chat_id && t.project_dir == project_dir && t.thread_id == thread_id)
            });
            file.topics.len() != before
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn remembers_per_chat_and_project_and_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let store = TopicStore::new(dir.path());
        assert_eq!(store.topic(-100, "/p/a").unwrap(), None);
        store
            .remember(Topic::new(-100, "/p/a", "alpha", 5))
            .unwrap();
        store.remember(Topic::new(-100, "/p/b", "beta", 9)).unwrap();
        store
            .remember(Topic::new(-200, "/p/a", "alpha", 3))
            .unwrap();
        assert_eq!(store.topic(-100, "/p/a").unwrap().unwrap().thread_id, 5);
        assert_eq!(store.topic(-200, "/p/a").unwrap().unwrap().thread_id, 3);
        store
            .remember(Topic::new(-100, "/p/a", "alpha", 11))
            .unwrap();
        let chat: Vec<(String, i64)> = store
            .topics_of_chat(-100)
            .unwrap()
            .into_iter()
            .map(|t| (t.prefix, t.thread_id))
            .collect();
        assert_eq!(chat, [("beta".to_string(), 9), ("alpha".to_string(), 11)]);
        let mode = std::fs::metadata(dir.path().join(TOPICS_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn forgets_only_the_topic_it_saw_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let store = TopicStore::new(dir.path());
        store.remember(Topic::new(1, "/p", "p", 5)).unwrap();
        // Another instance recreated it meanwhile: 5 is gone, 8 stays.
        store.remember(Topic::new(1, "/p", "p", 8)).unwrap();
        assert!(!store.forget(1, "/p", 5).unwrap());
        assert_eq!(store.topic(1, "/p").unwrap().unwrap().thread_id, 8);
        assert!(store.forget(1, "/p", 8).unwrap());
        assert_eq!(store.topic(1, "/p").unwrap(), None);
    }

    #[test]
    fn unknown_fields_survive_and_a_corrupt_file_is_set_aside() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(TOPICS_FILE);
        std::fs::write(
            &path,
            r#"{"topics":[{"chatId":1,"projectDir":"/p","prefix":"p","threadId":4,"colour":"blue"}],"version":2}"#,
        )
        .unwrap();
        let store = TopicStore::new(dir.path());
        store.remember(Topic::new(2, "/q", "q", 6)).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.contains("\"colour\": \"blue\"") && text.contains("\"version\": 2"),
            "{text}"
        );
        assert_eq!(
            store.topic(1, "/p").unwrap().unwrap().extra["colour"],
            "blue"
        );

        std::fs::write(&path, "{not json").unwrap();
        assert_eq!(store.topic(1, "/p").unwrap(), None);
        let set_aside = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .any(|e| e.file_name().to_string_lossy().contains(".corrupt-"));
        assert!(set_aside, "the unreadable file is kept for a human");
        store.remember(Topic::new(1, "/p", "p", 7)).unwrap();
        assert_eq!(store.topic(1, "/p").unwrap().unwrap().thread_id, 7);
    }
}
