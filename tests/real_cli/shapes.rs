//! The scripted claude (`piv-fake-claude`) against the real CLI: one session of each on the
//! same prompt and fault, their stream-json lines compared (kinds, keys and their order,
//! and what piv reads of them).

use std::path::Path;
use std::process::Stdio;

use piv_testkit::fake_claude::{Action, Rule, Scenario};
use serde_json::Value;

use super::{RealCli, MODEL, RUN_DEADLINE};
use crate::support::messages_api::Fault;
use crate::support::*;

/// One stream-json session of `bin` in `project`, with piv's own arguments.
fn one_session(bin: &Path, project: &Path, prompt: &str, env: &[(String, String)]) -> Vec<Value> {
    let cfg = piv::io::agent::AgentConfig {
        model: Some(MODEL.to_string()),
        permission_mode: "bypassPermissions".into(),
        ..piv::io::agent::AgentConfig::new(bin, project)
    };
    let child = std::process::Command::new(bin)
        .args(piv::io::agent::session_args(&cfg, prompt, None))
        .current_dir(project)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("IS_SANDBOX", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn a session");
    let out = wait_output(child, RUN_DEADLINE);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .collect()
}

/// The kind of a stream-json line: `system/init`, `assistant/tool_use`, `result`, ...
fn kind_of(line: &Value) -> String {
    let t = line["type"].as_str().unwrap_or("?");
    match t {
        "system" => format!("system/{}", line["subtype"].as_str().unwrap_or("?")),
        "assistant" | "user" => {
            let block = line["message"]["content"][0]["type"]
                .as_str()
                .unwrap_or("?");
            format!("{t}/{block}")
        }
        other => other.to_string(),
    }
}

fn keys(v: &Value) -> Vec<String> {
    v.as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default()
}

/// Whether `small` appears in `big` in the same order (every key of the scripted line is
/// one the real line has, in the real line's order).
fn is_subsequence(small: &[String], big: &[String]) -> bool {
    let mut it = big.iter();
    small.iter().all(|k| it.any(|b| b == k))
}

/// `piv-fake-claude` prints what the real CLI prints, in the shapes piv reads: for each
/// kind of line of a `/plan-feature` session (init, tool use, tool result, result) and of
/// an overloaded API (`system/api_retry`), the scripted line's keys are keys of the real
/// line, in the same order, and include every key piv reads.
#[test]
fn the_scripted_claude_prints_the_real_clis_shapes() {
    let Some(t) = RealCli::new("real_cli_shapes", 1) else {
        return;
    };
    let env = claude_cli::env(&t.bin, &t.api.base_url());
    let prompt = "/plan-feature \"Phase 1: Phase number 1\"";
    t.api
        .fault(Some("plan-feature"), Some(1), Fault::Overloaded);
    let home = t.sb.root.path().to_string_lossy().into_owned();
    let mut real_env = env.clone();
    real_env.push(("HOME".into(), home));
    real_env.push(("CLAUDE_CODE_MAX_RETRIES".into(), "2".into()));
    let real = one_session(&t.bin, &t.sb.project, prompt, &real_env);

    let fake_sb = Sandbox::new("fake_shapes", &ready_manifest(1));
    let fake_env = vec![
        (
            piv_testkit::fake_claude::SCRIPT_ENV.to_string(),
            fake_sb.script.to_string_lossy().into_owned(),
        ),
        (
            piv_testkit::fake_claude::STATE_DIR_ENV.to_string(),
            fake_sb.root.path().to_string_lossy().into_owned(),
        ),
    ];
    let fake_bin = Path::new(fake_claude());
    let mut fake = one_session(fake_bin, &fake_sb.project, prompt, &fake_env);
    fake_sb.scenario(Scenario::new().rule(Rule::new(
        "/plan-feature",
        Action::Overloaded { retries: 1 },
    )));
    fake.extend(one_session(fake_bin, &fake_sb.project, prompt, &fake_env));

    // What piv reads from each kind of line (and the shape keys around it).
    let required: &[(&str, &[&str])] = &[
        (
            "system/init",
            &["type", "subtype", "session_id", "model", "slash_commands"],
        ),
        ("assistant/tool_use", &["type", "message", "session_id"]),
        ("user/tool_result", &["type", "message", "session_id"]),
        (
            "system/api_retry",
            &[
                "type",
                "subtype",
                "attempt",
                "retry_delay_ms",
                "error_status",
                "error",
            ],
        ),
        (
            "result",
            &[
                "type",
                "subtype",
                "is_error",
                "duration_ms",
                "num_turns",
                "result",
                "session_id",
                "total_cost_usd",
                "terminal_reason",
            ],
        ),
    ];
    let mut report = String::new();
    for (kind, must) in required {
        let r = real.iter().find(|l| kind_of(l) == *kind);
        let f = fake.iter().find(|l| kind_of(l) == *kind);
        let (Some(r), Some(f)) = (r, f) else {
            report.push_str(&format!(
                "{kind}: real {} / scripted {}\n",
                r.is_some(),
                f.is_some()
            ));
            continue;
        };
        let (rk, fk) = (keys(r), keys(f));
        if !is_subsequence(&fk, &rk) {
            report.push_str(&format!(
                "{kind}: keys or order differ\n  real     {rk:?}\n  scripted {fk:?}\n"
            ));
        }
        for k in *must {
            if !fk.iter().any(|x| x == k) || !rk.iter().any(|x| x == k) {
                report.push_str(&format!(
                    "{kind}: `{k}` missing (real {rk:?}, scripted {fk:?})\n"
                ));
            }
        }
        if kind.ends_with("tool_use") {
            let (rb, fb) = (
                keys(&r["message"]["content"][0]),
                keys(&f["message"]["content"][0]),
            );
            if !is_subsequence(&fb, &rb) {
                report.push_str(&format!("{kind} block: real {rb:?}, scripted {fb:?}\n"));
            }
        }
    }
    assert!(
        report.is_empty(),
        "{report}\nreal kinds: {:?}\nscripted kinds: {:?}",
        real.iter().map(kind_of).collect::<Vec<_>>(),
        fake.iter().map(kind_of).collect::<Vec<_>>()
    );
}
