//! Tests of the manifest: round trips, updates, the view and the entry builders.

use super::document::wrong;
use super::value::scalar_text;
use super::*;
use serde_yaml::{Mapping, Value};

use crate::core::taxonomy::Severity;

const NOW: &str = "2030-01-02T03:04:05.678Z";

const RICH: &str = "\
zz_first_unknown: {keep: me, nested: {deep: [1, 2]}}
prd:
  path: .agents/PRD.md
  prd2: {path: PRD-gen2.md, generation: 2}
phases:
  '1': {plan: complete, execution: complete, validation: pass, name: Core, generation: 1}
  2: {plan: complete, execution: in_progress, validation: not_run, custom: x}
plans:
  - {path: p1.md, phase: 1, status: complete, module_hint: alpha}
failures:
  - command: execute
    phase: 2
    error_category: test_failure
    retry_count: 0
    resolution: pending
    details: 'vitest: 3 tests failed'
    extra_field: {why: unknown}
evolution: {generation: 1}
last_updated: '2001-01-01T00:00:00.000Z'
aa_last_unknown: [x, {y: z}]
";

fn parse(text: &str) -> Manifest {
    Manifest::parse(text).unwrap_or_else(|e| panic!("{e}"))
}

fn keys(m: &Mapping) -> Vec<String> {
    m.keys().map(|k| scalar_text(k).unwrap()).collect()
}

#[test]
fn round_trip_keeps_unknown_keys_order_and_key_styles() {
    let original = parse(RICH);
    let mut written = original.clone();
    written
        .apply(
            &ManifestUpdate::SetPhaseStatus {
                phase: 2,
                plan: None,
                execution: Some(StepStatus::Complete),
                validation: None,
            },
            NOW,
        )
        .unwrap();
    let reread = parse(&written.to_yaml());
    assert_eq!(
        keys(reread.doc()),
        keys(original.doc()),
        "top-level keys and order survive"
    );
    let doc = reread.doc();
    assert_eq!(doc["zz_first_unknown"], original.doc()["zz_first_unknown"]);
    assert_eq!(doc["aa_last_unknown"], original.doc()["aa_last_unknown"]);
    assert_eq!(doc["evolution"], original.doc()["evolution"]);
    assert_eq!(doc["prd"]["prd2"]["generation"], Value::from(2));
    // Phase keys keep their YAML type: '1' a string, 2 an int; extras inside phases kept.
    let phases = doc["phases"].as_mapping().unwrap();
    assert!(phases.contains_key(Value::from("1")));
    assert!(phases.contains_key(Value::from(2)));
    assert_eq!(phases[Value::from("1")]["generation"], Value::from(1));
    assert_eq!(phases[Value::from(2)]["custom"], Value::from("x"));
    assert_eq!(phases[Value::from(2)]["execution"], Value::from("complete"));
    // Extras inside list entries kept.
    assert_eq!(doc["plans"][0]["module_hint"], Value::from("alpha"));
    assert_eq!(
        doc["failures"][0]["extra_field"]["why"],
        Value::from("unknown")
    );
    assert_eq!(doc["last_updated"], Value::from(NOW));
    // Unchanged document round-trips to an equal value.
    assert_eq!(parse(&original.to_yaml()), original);
}

#[test]
fn parse_errors() {
    assert_eq!(Manifest::parse(""), Err(ManifestError::Empty));
    assert_eq!(Manifest::parse("  \n\n"), Err(ManifestError::Empty));
    assert_eq!(
        Manifest::parse("# only a comment\n"),
        Err(ManifestError::Empty)
    );
    assert_eq!(
        Manifest::parse("- a\n- b\n"),
        Err(ManifestError::NotAMap { found: "a list" })
    );
    assert_eq!(
        Manifest::parse("just text\n"),
        Err(ManifestError::NotAMap { found: "a string" })
    );
    match Manifest::parse("phases:\n  '1': {plan: complete\nprd: x\n") {
        Err(ManifestError::Syntax {
            line,
            column,
            message,
        }) => {
            assert!(line >= 2, "line {line}");
            assert!(column >= 1, "column {column}");
            assert!(!message.is_empty());
        }
        other => panic!("expected a syntax error, got {other:?}"),
    }
    let err = Manifest::parse("a: 1\n  b: [\n").unwrap_err().to_string();
    assert!(err.contains("line 2"), "{err}");
    // Found by fuzzing: readable but not writable, so `to_yaml` used to panic.
    for text in ["phases:\n  !: p{lan: comtee,p\n", "! : 1\n"] {
        match Manifest::parse(text) {
            Err(ManifestError::Syntax { message, .. }) => {
                assert!(message.contains("written back"), "{message}")
            }
            other => panic!("{text:?}: expected a syntax error, got {other:?}"),
        }
    }
}

#[test]
fn view_errors_name_the_field() {
    let cases: &[(&str, ManifestError)] = &[
            ("prd: {}\n", ManifestError::NoPhases),
            ("phases:\n", ManifestError::NoPhases),
            ("phases:\n  one: {plan: complete}\n", ManifestError::BadPhaseKey("one".into())),
            ("phases:\n  -1: {plan: complete}\n", ManifestError::BadPhaseKey("-1".into())),
            ("phases: [1, 2]\n", wrong("phases", "a map of phase number to status")),
            (
                "phases:\n  1: complete\n",
                wrong("phases.1", "a map with plan, execution and validation"),
            ),
            ("phases:\n  1: {plan: [a]}\n", wrong("phases.1.plan", "text")),
            (
                "phases: {}\nfailures:\n  - {resolution: pending}\n  - {resolution: pending}\n  - {retry_count: many}\n",
                wrong("failures[2].retry_count", "a whole number"),
            ),
            ("phases: {}\nfailures: {a: 1}\n", wrong("failures", "a list")),
            ("phases: {}\nplans:\n  - 3\n", wrong("plans[0]", "a map")),
            ("phases: {}\nplans:\n  - {phase: two}\n", wrong("plans[0].phase", "a whole number")),
            ("phases: {}\nprofiles: [a]\n", wrong("profiles", "a map of profile name to entry")),
            ("phases: {}\nresearch: {pending: x}\n", wrong("research.pending", "a list of names")),
            ("phases: {}\ncheckpoints:\n  - {tag: {a: b}}\n", wrong("checkpoints[0].tag", "text")),
        ];
    for (text, expected) in cases {
        assert_eq!(parse(text).view().unwrap_err(), *expected, "{text}");
    }
    let msg = wrong("failures[2].retry_count", "a whole number").to_string();
    assert!(
        msg.contains("failures[2].retry_count") && msg.contains("fix"),
        "{msg}"
    );
    assert!(ManifestError::NoPhases
        .to_string()
        .contains("manifest has no phases"));
    assert!(ManifestError::BadPhaseKey("one".into())
        .to_string()
        .contains("\"one\""));
}

#[test]
fn view_reads_typed_fields() {
    let text = "\
prd: {path: PRD.md}
phases:
  10: {plan: complete}
  '2': {plan: in_progress, execution: not_started, validation: not_run, name: Two}
  1: {plan: complete, execution: complete, validation: pass}
  3: {validation: bogus}
profiles:
  b: {freshness: stale}
  a: {}
research: {pending: [redis, 3]}
preflight: {status: blocked}
plans:
  - {path: x.md, phase: '2'}
checkpoints:
  - {tag: t1, phase: 1, status: active}
failures:
  - {command: execute, phase: '2', error_category: syntax_error, retry_count: '1', resolution: pending, details: d, checkpoint: t1, timestamp: now}
  - {command: commit}
next_action: {command: execute, argument: retry, reason: r, confidence: medium}
last_updated: yesterday
";
    let v = parse(text).view().unwrap();
    assert_eq!(
        v.phases.keys().copied().collect::<Vec<_>>(),
        vec![1, 2, 3, 10]
    );
    assert_eq!(v.phases[&2].plan, StepStatus::InProgress);
    assert_eq!(v.phases[&2].name.as_deref(), Some("Two"));
    assert_eq!(v.phases[&10].execution, StepStatus::NotStarted);
    assert_eq!(v.phases[&10].validation, ValidationStatus::NotRun);
    assert_eq!(
        v.phases[&3].validation,
        ValidationStatus::Other("bogus".into())
    );
    assert!(v.has_prd);
    assert_eq!(v.prd_path.as_deref(), Some("PRD.md"));
    assert_eq!(
        v.profiles
            .iter()
            .map(|p| (p.name.as_str(), p.is_stale()))
            .collect::<Vec<_>>(),
        vec![("b", true), ("a", false)]
    );
    assert_eq!(v.research_pending, vec!["redis", "3"]);
    assert_eq!(
        v.preflight.as_ref().unwrap().status.as_deref(),
        Some("blocked")
    );
    assert_eq!(v.plan_path_for(2), Some("x.md"));
    assert_eq!(v.active_checkpoint().unwrap().tag, "t1");
    let f = &v.failures[0];
    assert_eq!(
        (f.phase, f.retry_count, f.checkpoint.as_deref()),
        (2, 1, Some("t1"))
    );
    let g = &v.failures[1];
    assert_eq!((g.phase, g.retry_count, g.resolution.as_str()), (0, 0, ""));
    assert_eq!(v.first_pending_failure(None), Some(f));
    assert_eq!(v.first_pending_failure(Some(Severity::Blocking)), Some(f));
    assert_eq!(
        v.next_action,
        Some(NextAction {
            command: "execute".into(),
            argument: Some("retry".into()),
            reason: "r".into(),
            confidence: Confidence::Medium
        })
    );
    assert_eq!(v.last_updated.as_deref(), Some("yesterday"));
    assert_eq!(v.next_unfinished_phase(), Some(2));
    assert!(!v.is_monorepo());
}

#[test]
fn severity_filter_skips_advisory_failures() {
    let text = "phases: {}\nfailures:\n  - {error_category: stale_artifact, resolution: pending}\n  - {error_category: mystery, resolution: pending, details: m}\n";
    let v = parse(text).view().unwrap();
    assert_eq!(
        v.first_pending_failure(None).unwrap().error_category,
        "stale_artifact"
    );
    assert_eq!(
        v.first_pending_failure(Some(Severity::Blocking))
            .unwrap()
            .details,
        "m"
    );
}

#[test]
fn set_phase_status_updates_in_place_and_creates_with_matching_key_style() {
    let mut m = parse("phases:\n  '1': {plan: not_started, execution: not_started, validation: not_run}\nlast_updated: old\ntail: 1\n");
    let set = |phase, plan| ManifestUpdate::SetPhaseStatus {
        phase,
        plan,
        execution: None,
        validation: Some(ValidationStatus::Pass),
    };
    m.apply(&set(1, Some(StepStatus::Complete)), NOW).unwrap();
    m.apply(&set(2, None), NOW).unwrap();
    let phases = m.doc()["phases"].as_mapping().unwrap();
    assert_eq!(keys(phases), vec!["1", "2"]);
    assert!(phases.contains_key(Value::from("2")), "string style kept");
    assert_eq!(phases[Value::from("1")]["plan"], Value::from("complete"));
    assert_eq!(phases[Value::from("2")]["plan"], Value::from("not_started"));
    assert_eq!(
        phases[Value::from("2")]["execution"],
        Value::from("not_started")
    );
    assert_eq!(phases[Value::from("2")]["validation"], Value::from("pass"));
    // last_updated stays where it was.
    assert_eq!(keys(m.doc()), vec!["phases", "last_updated", "tail"]);
    assert_eq!(m.doc()["last_updated"], Value::from(NOW));

    let mut ints = parse("phases:\n  1: {plan: complete}\n");
    ints.apply(&set(3, None), NOW).unwrap();
    assert!(ints.doc()["phases"]
        .as_mapping()
        .unwrap()
        .contains_key(Value::from(3)));
    let mut none = parse("prd: {}\n");
    none.apply(&set(1, None), NOW).unwrap();
    assert!(none.doc()["phases"]
        .as_mapping()
        .unwrap()
        .contains_key(Value::from(1)));
    assert_eq!(keys(none.doc()), vec!["prd", "phases", "last_updated"]);
    assert!(
        none.to_yaml().contains("\n  1:\n"),
        "int key dumped bare: {}",
        none.to_yaml()
    );
}

#[test]
fn append_creates_and_extends_lists() {
    let mut m = parse("phases: {}\nfailures: []\n");
    let failure = Failure {
        command: "execute".into(),
        phase: 2,
        error_category: "test_failure".into(),
        retry_count: 0,
        resolution: "pending".into(),
        checkpoint: None,
        details: "d".into(),
        timestamp: NOW.into(),
    };
    m.apply(
        &ManifestUpdate::Append {
            section: ListSection::Failures,
            entry: failure.to_value(),
        },
        NOW,
    )
    .unwrap();
    m.apply(
        &ManifestUpdate::Append {
            section: ListSection::Sessions,
            entry: Value::from("s"),
        },
        NOW,
    )
    .unwrap();
    m.apply(
        &ManifestUpdate::Append {
            section: ListSection::Checkpoints,
            entry: checkpoint_entry("t", 2),
        },
        NOW,
    )
    .unwrap();
    let v = m.view().unwrap();
    assert_eq!(v.failures, vec![failure]);
    assert_eq!(m.doc()["failures"][0]["max_retries"], Value::from(2));
    assert!(m.doc()["failures"][0].get("checkpoint").is_none());
    assert_eq!(m.doc()["sessions"], Value::Sequence(vec![Value::from("s")]));
    assert_eq!(v.active_checkpoint().unwrap().phase, Some(2));
    let mut bad = parse("phases: {}\nplans: {a: 1}\n");
    assert_eq!(
        bad.apply(
            &ManifestUpdate::Append {
                section: ListSection::Plans,
                entry: plan_entry("p", 1, NOW)
            },
            NOW
        ),
        Err(wrong("plans", "a list"))
    );
}

#[test]
fn merge_follows_the_reference_with_checkpoints_appended() {
    let mut m = parse("\
phases:\n  '1': {plan: complete}\nsettings: {mode: autonomous, nested: {a: 1}}\nplans: [{path: a}]\ncheckpoints: [{tag: old}]\nother_list: [1, 2]\nscalar: 1\n");
    let update: Mapping = serde_yaml::from_str(
            "phases:\n  1: {plan: complete, execution: complete}\n  2: {plan: not_started}\nsettings: {nested: {b: 2}, extra: yes}\nplans: [{path: b}]\ncheckpoints: [{tag: new}]\nother_list: [3]\nscalar: two\nfresh: {x: 1}\nexecutions: [{phase: 1}]\n",
        )
        .unwrap();
    m.apply(&ManifestUpdate::Merge(update), NOW).unwrap();
    let d = m.doc();
    let phases = d["phases"].as_mapping().unwrap();
    assert_eq!(keys(phases), vec!["1", "2"], "int key 1 merged into '1'");
    assert_eq!(
        phases[Value::from("1")]["execution"],
        Value::from("complete")
    );
    assert_eq!(d["settings"]["mode"], Value::from("autonomous"));
    assert_eq!(
        d["settings"]["nested"],
        serde_yaml::from_str::<Value>("{b: 2}").unwrap()
    );
    assert_eq!(d["plans"].as_sequence().unwrap().len(), 2);
    assert_eq!(d["checkpoints"].as_sequence().unwrap().len(), 2);
    assert_eq!(
        d["other_list"],
        serde_yaml::from_str::<Value>("[3]").unwrap()
    );
    assert_eq!(d["scalar"], Value::from("two"));
    assert_eq!(d["fresh"]["x"], Value::from(1));
    assert_eq!(d["executions"].as_sequence().unwrap().len(), 1);
}

#[test]
fn resolve_failures_touches_only_pending_entries_of_that_phase_and_command() {
    let mut m = parse(
        "\
phases: {}
failures:
  - {command: execute, phase: 2, resolution: pending}
  - {command: execute, phase: '2', resolution: pending}
  - {command: execute, phase: 2, resolution: escalated}
  - {command: execute, phase: 3, resolution: pending}
  - {command: commit, phase: 2, resolution: pending}
",
    );
    m.apply(
        &ManifestUpdate::ResolveFailures {
            phase: 2,
            command: "execute".into(),
            resolution: "auto_fixed".into(),
        },
        NOW,
    )
    .unwrap();
    let got: Vec<String> = m
        .view()
        .unwrap()
        .failures
        .into_iter()
        .map(|f| f.resolution)
        .collect();
    assert_eq!(
        got,
        vec![
            "auto_fixed",
            "auto_fixed",
            "escalated",
            "pending",
            "pending"
        ]
    );
}

#[test]
fn resolve_checkpoint_and_set_next_action() {
    let mut m = parse("phases: {}\ncheckpoints:\n  - {tag: a, status: active}\n  - {tag: b, status: active}\n  - {tag: a, status: active}\n");
    m.apply(&ManifestUpdate::ResolveCheckpoint { tag: "a".into() }, NOW)
        .unwrap();
    let st: Vec<String> = m
        .view()
        .unwrap()
        .checkpoints
        .into_iter()
        .map(|c| c.status)
        .collect();
    assert_eq!(st, vec!["resolved", "active", "resolved"]);
    let mut empty = parse("phases: {}\n");
    empty
        .apply(&ManifestUpdate::ResolveCheckpoint { tag: "a".into() }, NOW)
        .unwrap();

    let action = NextAction {
        command: "done".into(),
        argument: None,
        reason: "All phases complete".into(),
        confidence: Confidence::High,
    };
    m.apply(&ManifestUpdate::SetNextAction(action.clone()), NOW)
        .unwrap();
    assert!(m.doc()["next_action"].get("argument").is_none());
    assert_eq!(m.view().unwrap().next_action, Some(action));
}

#[test]
fn entry_constructors() {
    let e = execution_entry(3, NOW);
    assert_eq!(e["tasks_total"], Value::from(0));
    assert_eq!(e["completed_at"], Value::from(NOW));
    let p = plan_entry("x.md", 1, NOW);
    assert_eq!(p["status"], Value::from("complete"));
    let s = SessionRecord {
        step: "execute".into(),
        phase: Some(1),
        commands: "/prime + /execute x.md".into(),
        session_id: Some("abc".into()),
        outcome: "success".into(),
        cost_usd: Some(0.5),
        model: None,
        num_turns: Some(3),
        duration_ms: None,
        finished_at: NOW.into(),
    };
    let v = s.to_value();
    assert_eq!(v["session_id"], Value::from("abc"));
    assert_eq!(v["duration_ms"], Value::Null);
    assert!(v.get("model").is_none() && v.get("cost_unknown").is_none());
    let unknown = SessionRecord {
        cost_usd: None,
        model: Some("claude-opus-5-5".into()),
        ..s
    }
    .to_value();
    assert_eq!(unknown["cost_usd"], Value::Null);
    assert_eq!(unknown["cost_unknown"], Value::from(true));
    assert_eq!(unknown["model"], Value::from("claude-opus-5-5"));
    let n = NotificationEntry {
        timestamp: NOW.into(),
        kind: "escalation".into(),
        severity: "critical".into(),
        category: "prd_gap".into(),
        phase: 1,
        details: "d".into(),
        blocking: true,
        action_taken: "a".into(),
    }
    .to_value();
    assert_eq!(n["type"], Value::from("escalation"));
}

#[test]
fn ambiguous_scalars_survive_a_write() {
    let text = "phases: {}\nv:\n  - 'yes'\n  - 'no'\n  - 'y'\n  - '1'\n  - '01'\n  - '1e3'\n  - 'null'\n  - '~'\n  - '2026-01-01T00:00:00Z'\n  - 2026-01-01T00:00:00Z\n  - 'a: b'\n  - '- x'\n  - '#c'\n  - ''\n  - \"multi\\nline\"\n  - 0x1F\n  - 1.50\n  - true\n  - null\n  - 'True'\n  - 'off'\n";
    let m = Manifest::parse(text).unwrap();
    let again = Manifest::parse(&m.to_yaml()).unwrap();
    assert_eq!(again, m, "{}", m.to_yaml());
}

#[test]
fn preflight_details_are_read_leniently() {
    let doc = "phases:\n  1: {plan: complete}\npreflight:\n  status: passed\n  credentials_verified: 2\n  technologies_checked: [stripe, 7]\n  notes: fine\n  completed_at: '2026-01-01T00:00:00Z'\n";
    let v = parse(doc).view().unwrap();
    let p = v.preflight.unwrap();
    assert_eq!(p.credentials_verified, Some(2));
    assert_eq!(p.technologies_checked, ["stripe", "7"]);
    assert_eq!(p.notes.as_deref(), Some("fine"));
    assert_eq!(p.completed_at.as_deref(), Some("2026-01-01T00:00:00Z"));
    // Display-only fields of the wrong type are left out; the manifest still reads.
    let odd = "phases:\n  1: {plan: complete}\npreflight:\n  status: blocked\n  credentials_verified: many\n  technologies_checked: stripe\n  notes: [a]\n";
    let p = parse(odd).view().unwrap().preflight.unwrap();
    assert_eq!(p.status.as_deref(), Some("blocked"));
    assert_eq!(p.credentials_verified, None);
    assert!(p.technologies_checked.is_empty());
    assert_eq!(p.notes, None);
}
