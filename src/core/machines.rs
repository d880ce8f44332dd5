//! Instances on several machines in one list: the statuses other machines published in
//! the shared registry (each with its host name) merged with this machine's own, each
//! instance once, the others' prefixes shown as `prefix@host`.

use crate::core::status::InstanceStatus;

/// A status another instance published, with the host it runs on.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PublishedInstance {
    pub hostname: String,
    pub status: InstanceStatus,
}

/// The registry key of an instance: its host and a hash of its project directory (the
/// pair is unique; keys allow letters, digits, '-', '_' and '=').
pub fn registry_key(hostname: &str, project_dir: &str) -> String {
    let host: String = hostname
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    // FNV-1a: stable across builds and machines (std's hasher is not).
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in project_dir.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{host}_{hash:016x}")
}

/// The published instances this machine does not list itself (not the same host and
/// project directory as one of `local_dirs`).
pub fn not_listed_here(
    published: Vec<PublishedInstance>,
    own_host: &str,
    local_dirs: &[&str],
) -> Vec<PublishedInstance> {
    published
        .into_iter()
        .filter(|p| {
            !(p.hostname == own_host && local_dirs.contains(&p.status.project_dir.as_str()))
        })
        .collect()
}

/// The chat's answer when an instance on another machine has not acknowledged a command
/// within a few seconds.
pub fn reply_queued(action: &str, prefix: &str, host: &str) -> String {
    format!(
        "⏳ /{action} for [{}] on {} is queued: it has not acknowledged yet, and it will be \
         applied when that instance is back",
        crate::core::telegram_text::escape_html(prefix),
        crate::core::telegram_text::escape_html(host)
    )
}

/// This machine's statuses, then the other machines' (sorted by prefix), leaving out what
/// this machine already listed (same host, same project directory).
pub fn merge(
    local: Vec<InstanceStatus>,
    own_host: &str,
    published: Vec<PublishedInstance>,
) -> Vec<InstanceStatus> {
    let local_dirs: Vec<&str> = local.iter().map(|l| l.project_dir.as_str()).collect();
    let mut others: Vec<InstanceStatus> = not_listed_here(published, own_host, &local_dirs)
        .into_iter()
        .map(|p| InstanceStatus {
            prefix: format!("{}@{}", p.status.prefix, p.hostname),
            ..p.status
        })
        .collect();
    others.sort_by(|a, b| a.prefix.cmp(&b.prefix));
    let mut all = local;
    all.extend(others);
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(prefix: &str, dir: &str) -> InstanceStatus {
        let facts = crate::core::status::InstanceFacts {
            prefix: prefix.into(),
            project_dir: dir.into(),
            pid: Some(1),
            ..Default::default()
        };
        crate::core::status::build_status(&facts, None, Ok(Default::default()), 0)
    }

    fn published(host: &str, prefix: &str, dir: &str) -> PublishedInstance {
        PublishedInstance {
            hostname: host.into(),
            status: status(prefix, dir),
        }
    }

    #[test]
    fn each_instance_once_others_tagged_with_their_host() {
        // (local, published, expected prefixes in order)
        let table: Vec<(Vec<InstanceStatus>, Vec<PublishedInstance>, Vec<&str>)> = vec![
            (vec![status("a", "/p/a")], vec![], vec!["a"]),
            (
                vec![status("a", "/p/a")],
                vec![published("me", "a", "/p/a")],
                vec!["a"],
            ),
            (
                vec![status("a", "/p/a")],
                vec![
                    published("box", "z", "/w/z"),
                    published("me", "a", "/p/a"),
                    published("box", "b", "/w/b"),
                ],
                vec!["a", "b@box", "z@box"],
            ),
            // Same directory on another host is another instance.
            (
                vec![status("a", "/p/a")],
                vec![published("box", "a", "/p/a")],
                vec!["a", "a@box"],
            ),
            // Same host, a directory this machine's registry does not list (another
            // PIV_HOME): shown.
            (vec![], vec![published("me", "c", "/q/c")], vec!["c@me"]),
        ];
        for (local, published, want) in table {
            let got: Vec<String> = merge(local, "me", published)
                .into_iter()
                .map(|s| s.prefix)
                .collect();
            assert_eq!(got, want);
        }
    }

    #[test]
    fn routing_sees_only_what_this_machine_does_not_list() {
        let published = vec![
            published("me", "a", "/p/a"),
            published("me", "c", "/q/c"),
            published("box", "a", "/p/a"),
        ];
        let got: Vec<(String, String)> = not_listed_here(published, "me", &["/p/a"])
            .into_iter()
            .map(|p| (p.hostname, p.status.prefix))
            .collect();
        assert_eq!(
            got,
            vec![("me".into(), "c".into()), ("box".into(), "a".into())]
        );
        let text = reply_queued("pause", "b<x>", "box");
        assert!(
            text.contains("/pause for [b&lt;x&gt;] on box is queued"),
            "{text}"
        );
    }

    #[test]
    fn registry_keys_are_valid_stable_and_distinct() {
        let key = registry_key("build.box-1", "/home/u/proj");
        assert!(key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
        assert!(key.starts_with("build_box-1_"));
        assert_eq!(key, registry_key("build.box-1", "/home/u/proj"));
        assert_ne!(key, registry_key("build.box-1", "/home/u/proj2"));
        assert_ne!(key, registry_key("other", "/home/u/proj"));
    }
}
