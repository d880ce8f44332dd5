//! The instance registry model: the JSON document of running instances
//! (`$PIV_HOME/registry.json`), with unknown fields preserved, and its pure operations
//! (upsert by project, remove, prune by a liveness predicate, prefix look-ups, the
//! bot-owner mark).
//!
//! It does no I/O and decides nothing about liveness: `io::registry_store` reads the file
//! under `registry.lock`, applies these operations with a liveness predicate it built from
//! the instance locks, and writes the result back atomically.
//!
//! The JSON shape and camelCase names are the reference's (`prefix`, `projectDir`, `pid`,
//! `startedAt`, `manifestPath`, `isBotOwner`, top-level `lastUpdated`), plus our optional
//! `instanceLock`, `botId` and `chatId` (the Telegram bot and chat an instance reports
//! to; absent in older entries, which still parse). Fields we do not know, at either
//! level, are kept in `extra` and written
//! back unchanged so an older or newer piv sharing the home loses nothing.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The whole registry document.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Registry {
    #[serde(default)]
    pub instances: Vec<Instance>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_updated: Option<String>,
    /// Top-level fields piv does not model, preserved in order.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// One running `piv run` process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Instance {
    pub prefix: String,
    pub project_dir: String,
    pub pid: u32,
    #[serde(default)]
    pub started_at: String,
    #[serde(default)]
    pub manifest_path: String,
    #[serde(default)]
    pub is_bot_owner: bool,
    /// Path of the lock file this instance holds for its whole life; the entry is alive
    /// iff that lock is held. Absent in entries written by the reference implementation,
    /// which fall back to a PID check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_lock: Option<String>,
    /// The Telegram bot this instance uses (the token's numeric id, never the token);
    /// absent without Telegram and in entries of an older piv or the reference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bot_id: Option<u64>,
    /// The chat this instance reports to (`TELEGRAM_CHAT_ID`); absent as `bot_id` is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chat_id: Option<i64>,
    /// Entry fields piv does not model, preserved in order.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Instance {
    /// A fresh entry with no extra fields and no bot-owner mark.
    pub fn new(
        prefix: impl Into<String>,
        project_dir: impl Into<String>,
        pid: u32,
        started_at: impl Into<String>,
        manifest_path: impl Into<String>,
    ) -> Self {
        Instance {
            prefix: prefix.into(),
            project_dir: project_dir.into(),
            pid,
            started_at: started_at.into(),
            manifest_path: manifest_path.into(),
            is_bot_owner: false,
            instance_lock: None,
            bot_id: None,
            chat_id: None,
            extra: Map::new(),
        }
    }
}

/// Why `registry.json` could not be read as a registry.
#[derive(Debug, thiserror::Error)]
#[error("registry.json is not a valid registry: {0}")]
pub struct RegistryParseError(#[from] serde_json::Error);

impl Registry {
    /// Parses the registry document. An empty (or whitespace-only) file is an empty
    /// registry: it is what a crash between `create` and the first write would leave.
    pub fn parse(text: &str) -> Result<Registry, RegistryParseError> {
        if text.trim().is_empty() {
            return Ok(Registry::default());
        }
        Ok(serde_json::from_str(text)?)
    }

    /// The document as written to disk: 2-space indented JSON with a trailing newline.
    pub fn to_json_pretty(&self) -> String {
        // Serialising plain structs and a `Map` of `Value`s cannot fail.
        let mut text = serde_json::to_string_pretty(self).expect("registry serialises");
        text.push('\n');
        text
    }

    /// Adds `instance`, or replaces the entry of the same project directory. The entry's
    /// unknown fields are kept when the new one brings none, so a re-registration does not
    /// drop what another tool stored there.
    pub fn upsert(&mut self, mut instance: Instance) {
        match self
            .instances
            .iter_mut()
            .find(|i| i.project_dir == instance.project_dir)
        {
            Some(existing) => {
                for (k, v) in &existing.extra {
                    instance.extra.entry(k.clone()).or_insert_with(|| v.clone());
                }
                *existing = instance;
            }
            None => self.instances.push(instance),
        }
    }

    /// Removes the entry of `project_dir` and returns it.
    pub fn remove(&mut self, project_dir: &str) -> Option<Instance> {
        let index = self
            .instances
            .iter()
            .position(|i| i.project_dir == project_dir)?;
        Some(self.instances.remove(index))
    }

    /// Keeps only the entries `is_alive` accepts and returns the others, in order.
    pub fn prune(&mut self, is_alive: impl Fn(&Instance) -> bool) -> Vec<Instance> {
        let (alive, dead): (Vec<_>, Vec<_>) = std::mem::take(&mut self.instances)
            .into_iter()
            .partition(is_alive);
        self.instances = alive;
        dead
    }

    /// The entry registered under `prefix`.
    pub fn find_prefix(&self, prefix: &str) -> Option<&Instance> {
        self.instances.iter().find(|i| i.prefix == prefix)
    }

    /// The entry of `project_dir`.
    pub fn find_project(&self, project_dir: &str) -> Option<&Instance> {
        self.instances.iter().find(|i| i.project_dir == project_dir)
    }

    /// Another project already registered under `prefix` (routing by prefix would become
    /// ambiguous if `project_dir` registered too).
    pub fn duplicate_prefix(&self, prefix: &str, project_dir: &str) -> Option<&Instance> {
        self.instances
            .iter()
            .find(|i| i.prefix == prefix && i.project_dir != project_dir)
    }

    /// Sets the bot-owner mark of `project_dir`'s entry; returns whether the entry exists.
    /// Marking an owner clears the mark everywhere else: the mark mirrors
    /// `bot-owner.lock`, which only one process can hold, so an older mark is stale.
    pub fn set_bot_owner(&mut self, project_dir: &str, is_owner: bool) -> bool {
        let mut found = false;
        for instance in &mut self.instances {
            if instance.project_dir == project_dir {
                instance.is_bot_owner = is_owner;
                found = true;
            } else if is_owner {
                instance.is_bot_owner = false;
            }
        }
        found
    }

    /// The prefixes of every entry, in registry order (for "unknown prefix" messages).
    pub fn prefixes(&self) -> Vec<&str> {
        self.instances.iter().map(|i| i.prefix.as_str()).collect()
    }
}

/// Why a prefix names no single instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrefixError {
    /// No prefix matches, even ignoring case.
    Unknown,
    /// No exact match, and several prefixes match ignoring case (in the order given).
    Ambiguous(Vec<String>),
}

/// The one rule for finding an instance by the prefix a human typed (`/pause b`,
/// `/status b`, `piv signal b pause`): the prefix spelled exactly so wins; otherwise the
/// one prefix equal to it ignoring case, with Unicode case folding (`beta`, `Beta` and
/// `BETA` name `Beta`; `été` names `ÉTÉ`). Several prefixes equal ignoring case and none
/// exactly is ambiguous: the exact spelling is needed. Nothing is trimmed.
///
/// Returns the index of the match in `prefixes`.
pub fn resolve_prefix<S: AsRef<str>>(prefixes: &[S], wanted: &str) -> Result<usize, PrefixError> {
    if let Some(exact) = prefixes.iter().position(|p| p.as_ref() == wanted) {
        return Ok(exact);
    }
    let folded = wanted.to_lowercase();
    let matches: Vec<usize> = (0..prefixes.len())
        .filter(|&i| prefixes[i].as_ref().to_lowercase() == folded)
        .collect();
    match matches.as_slice() {
        [one] => Ok(*one),
        [] => Err(PrefixError::Unknown),
        many => Err(PrefixError::Ambiguous(
            many.iter()
                .map(|&i| prefixes[i].as_ref().to_string())
                .collect(),
        )),
    }
}

/// Registry entries with these prefixes (project `/p/<prefix>`), for tests.
#[cfg(test)]
pub(crate) fn instances_named(prefixes: &[&str]) -> Vec<Instance> {
    prefixes
        .iter()
        .map(|p| Instance::new(*p, format!("/p/{p}"), 1, "t", "m"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_resolution_table() {
        let set = ["alpha", "Beta", "gamma", "GAMMA", "ÉTÉ", "x.y"];
        let ambiguous = |v: &[&str]| {
            Err(PrefixError::Ambiguous(
                v.iter().map(|s| s.to_string()).collect(),
            ))
        };
        let cases: Vec<(&str, Result<usize, PrefixError>)> = vec![
            ("alpha", Ok(0)),
            ("ALPHA", Ok(0)),
            ("Alpha", Ok(0)),
            ("beta", Ok(1)),
            ("BETA", Ok(1)),
            ("gamma", Ok(2)),
            ("GAMMA", Ok(3)),
            ("Gamma", ambiguous(&["gamma", "GAMMA"])),
            // Unicode case folding, not ASCII only.
            ("été", Ok(4)),
            ("Été", Ok(4)),
            ("x.y", Ok(5)),
            ("X.Y", Ok(5)),
            ("delta", Err(PrefixError::Unknown)),
            // Neither a prefix of a prefix nor trimmed.
            ("alp", Err(PrefixError::Unknown)),
            (" alpha", Err(PrefixError::Unknown)),
            ("", Err(PrefixError::Unknown)),
        ];
        for (wanted, expected) in cases {
            assert_eq!(resolve_prefix(&set, wanted), expected, "{wanted:?}");
        }
        assert_eq!(resolve_prefix::<&str>(&[], "a"), Err(PrefixError::Unknown));
        // The exact spelling wins over a case-insensitive match listed first.
        assert_eq!(resolve_prefix(&["B", "b"], "b"), Ok(1));
    }

    const SEED: &str = r#"{
  "instances": [
    {
      "prefix": "alpha",
      "projectDir": "/p/alpha",
      "pid": 101,
      "startedAt": "2024-01-01T00:00:00.000Z",
      "manifestPath": "/p/alpha/.agents/manifest.yaml",
      "isBotOwner": true,
      "color": "blue"
    },
    {
      "prefix": "beta",
      "projectDir": "/p/beta",
      "pid": 202,
      "startedAt": "2024-01-01T00:00:01.000Z",
      "manifestPath": "/p/beta/.agents/manifest.yaml",
      "isBotOwner": false,
      "instanceLock": "/h/instances/beta-202-1.lock"
    }
  ],
  "lastUpdated": "2024-01-01T00:00:02.000Z",
  "schema": 7
}
"#;

    fn instance(prefix: &str, dir: &str, pid: u32) -> Instance {
        Instance::new(prefix, dir, pid, "2024-01-01T00:00:00Z", format!("{dir}/m"))
    }

    #[test]
    fn seed_document_round_trips_with_unknown_fields() {
        let registry = Registry::parse(SEED).unwrap();
        assert_eq!(registry.instances.len(), 2);
        assert_eq!(registry.instances[0].extra["color"], "blue");
        assert_eq!(
            registry.instances[1].instance_lock.as_deref(),
            Some("/h/instances/beta-202-1.lock")
        );
        assert_eq!(registry.extra["schema"], 7);
        assert_eq!(registry.to_json_pretty(), SEED);
    }

    #[test]
    fn bot_and_chat_round_trip_and_old_entries_have_none() {
        let old = Registry::parse(SEED).unwrap();
        assert!(old
            .instances
            .iter()
            .all(|i| i.bot_id.is_none() && i.chat_id.is_none()));
        let mut registry = old.clone();
        registry.instances[1].bot_id = Some(123_456);
        registry.instances[1].chat_id = Some(-100_200);
        let text = registry.to_json_pretty();
        assert!(text.contains("\"botId\": 123456"), "{text}");
        assert!(text.contains("\"chatId\": -100200"), "{text}");
        let again = Registry::parse(&text).unwrap();
        assert_eq!(again, registry);
        assert_eq!(again.instances[0].extra["color"], "blue");
    }

    #[test]
    fn parse_table() {
        let cases: &[(&str, Option<usize>)] = &[
            ("", Some(0)),
            ("  \n", Some(0)),
            ("{}", Some(0)),
            (r#"{"instances":[]}"#, Some(0)),
            (
                r#"{"instances":[{"prefix":"a","projectDir":"/a","pid":1}]}"#,
                Some(1),
            ),
            ("{\"instances\":[", None),
            ("[]", None),
            (r#"{"instances":[{"prefix":"a"}]}"#, None),
            (
                r#"{"instances":[{"prefix":"a","projectDir":"/a","pid":-1}]}"#,
                None,
            ),
        ];
        for (text, expected) in cases {
            let got = Registry::parse(text).map(|r| r.instances.len()).ok();
            assert_eq!(got, *expected, "input {text:?}");
        }
    }

    #[test]
    fn upsert_adds_then_updates_by_project_dir_keeping_extras() {
        let mut registry = Registry::parse(SEED).unwrap();
        registry.upsert(instance("alpha2", "/p/alpha", 999));
        assert_eq!(registry.instances.len(), 2);
        assert_eq!(registry.instances[0].pid, 999);
        assert_eq!(registry.instances[0].prefix, "alpha2");
        assert_eq!(registry.instances[0].extra["color"], "blue");
        registry.upsert(instance("gamma", "/p/gamma", 3));
        assert_eq!(registry.prefixes(), vec!["alpha2", "beta", "gamma"]);
    }

    #[test]
    fn remove_and_prune() {
        let mut registry = Registry::default();
        for (p, d, pid) in [("a", "/a", 1), ("b", "/b", 2), ("c", "/c", 3)] {
            registry.upsert(instance(p, d, pid));
        }
        assert_eq!(registry.remove("/b").unwrap().prefix, "b");
        assert!(registry.remove("/b").is_none());
        let pruned = registry.prune(|i| i.pid != 1);
        assert_eq!(pruned.len(), 1);
        assert_eq!(pruned[0].prefix, "a");
        assert_eq!(registry.prefixes(), vec!["c"]);
    }

    #[test]
    fn prefix_lookups() {
        let mut registry = Registry::default();
        registry.upsert(instance("a", "/a", 1));
        registry.upsert(instance("b", "/b", 2));
        assert_eq!(registry.find_prefix("b").unwrap().project_dir, "/b");
        assert!(registry.find_prefix("z").is_none());
        assert_eq!(registry.find_project("/a").unwrap().prefix, "a");
        // Same project re-registering its own prefix is not a duplicate.
        assert!(registry.duplicate_prefix("a", "/a").is_none());
        assert_eq!(
            registry
                .duplicate_prefix("a", "/other")
                .unwrap()
                .project_dir,
            "/a"
        );
        assert!(registry.duplicate_prefix("new", "/other").is_none());
    }

    #[test]
    fn bot_owner_mark_is_exclusive() {
        let mut registry = Registry::default();
        registry.upsert(instance("a", "/a", 1));
        registry.upsert(instance("b", "/b", 2));
        assert!(registry.set_bot_owner("/a", true));
        assert!(registry.set_bot_owner("/b", true));
        let marks: Vec<bool> = registry.instances.iter().map(|i| i.is_bot_owner).collect();
        assert_eq!(marks, vec![false, true]);
        assert!(registry.set_bot_owner("/b", false));
        assert!(!registry.instances[1].is_bot_owner);
        assert!(!registry.set_bot_owner("/missing", true));
    }
}
