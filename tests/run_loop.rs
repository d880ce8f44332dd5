//! `piv run` against the scripted claude: the PIV loop end to end, real processes, real
//! git repos (issue 4).

use crate::support::*;

/// A 3-phase project goes from nothing to every phase committed, and the manifest tells
/// the story (and keeps what piv does not model).
#[test]
fn three_phases_run_from_nothing_to_all_committed() {
    let sb = Sandbox::new("three", &ready_manifest(3));
    let out = sb.run_to_end(&[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{}", sb.dump());
    let log = sb.git_log();
    for n in 1..=3 {
        assert!(
            log.iter().any(|l| l == &format!("feat: phase {n}")),
            "phase {n} committed: {log:?}"
        );
    }
    let m = sb.manifest();
    for n in 1..=3u64 {
        let p = m["phases"]
            .get(serde_yaml::Value::from(n))
            .expect("phase entry");
        assert_eq!(p["plan"], "complete", "{p:?}");
        assert_eq!(p["execution"], "complete");
        assert_eq!(p["validation"], "pass");
        assert_eq!(p["commit"], "complete");
        assert_eq!(p["name"], format!("Phase number {n}"));
    }
    assert_eq!(m["custom_notes"]["owner"], "keep-me");
    assert!(m["sessions"].as_sequence().is_some_and(|s| s.len() >= 9));
    assert_eq!(m["next_action"]["command"], "done");
    assert!(stdout.contains("All phases complete"), "{stdout}");
    assert!(!sb.project.join(".agents/orchestrator.pid").exists());
}
