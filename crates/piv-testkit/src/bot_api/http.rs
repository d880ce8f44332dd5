//! The Bot API stand-in's HTTP side: requests parsed (JSON, form or query), routed by method name, and answered the way Telegram answers them, plus the `/__test` API.

use super::*;

pub(super) type Params = Map<String, Value>;

pub(super) fn respond(request: crate::http1::Request, status: u16, body: &Value) {
    request.respond(
        status,
        "application/json",
        &serde_json::to_vec(body).expect("json"),
    );
}

pub(super) fn ok(result: Value) -> (u16, Value) {
    (200, json!({"ok": true, "result": result}))
}

pub(super) fn api_error(code: u16, description: &str, retry_after: Option<u64>) -> Value {
    let mut body = json!({"ok": false, "error_code": code, "description": description});
    if let Some(seconds) = retry_after {
        body["parameters"] = json!({"retry_after": seconds});
    }
    body
}

pub(super) fn err(code: u16, description: &str) -> (u16, Value) {
    (code, api_error(code, description, None))
}

pub(super) fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = |b: u8| (b as char).to_digit(16);
                match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 3;
                    }
                    _ => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse_form(s: &str, into: &mut Params) {
    for pair in s.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        into.insert(percent_decode(k), Value::String(percent_decode(v)));
    }
}

pub(super) fn param_i64(p: &Params, key: &str) -> Option<i64> {
    match p.get(key)? {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

pub(super) fn param_str(p: &Params, key: &str) -> Option<String> {
    match p.get(key)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A JSON value that a form parameter carries as a JSON string.
pub(super) fn param_json(p: &Params, key: &str) -> Option<Value> {
    match p.get(key)? {
        Value::String(s) => serde_json::from_str(s).ok(),
        Value::Null => None,
        v => Some(v.clone()),
    }
}

fn pid_of(request: &crate::http1::Request) -> Option<u32> {
    request
        .header("User-Agent")?
        .split_whitespace()
        .find_map(|part| part.strip_prefix("pid/"))
        .and_then(|pid| pid.parse().ok())
}

pub(super) fn handle(inner: &Inner, request: crate::http1::Request) {
    let url = request.url().to_string();
    let (path, query) = url.split_once('?').unwrap_or((&url, ""));
    let mut params = Params::new();
    parse_form(query, &mut params);
    let body = String::from_utf8_lossy(request.body()).into_owned();
    let is_json = request
        .header("Content-Type")
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json {
        if let Ok(Value::Object(map)) = serde_json::from_str::<Value>(&body) {
            params.extend(map);
        }
    } else if !body.is_empty() {
        parse_form(&body, &mut params);
    }
    let pid = pid_of(&request);
    let remote = Some(request.remote_addr());

    let mut segments = path.trim_start_matches('/').splitn(2, '/');
    let first = percent_decode(segments.next().unwrap_or(""));
    let method = segments.next().unwrap_or("").to_ascii_lowercase();
    let (status, body) = if first == "__test" {
        test_api(inner, &method, &params)
    } else if let Some(token) = first.strip_prefix("bot") {
        let outage = {
            let mut state = inner.lock();
            state.faults_log.push((method.clone(), Instant::now(), pid));
            let outage = state
                .faults
                .outage
                .filter(|(until, _)| Instant::now() < *until);
            if outage.is_none() {
                state.faults.outage = None;
            }
            outage.map(|(_, kind)| kind)
        };
        inner.changed.notify_all();
        if let Some(kind) = outage {
            fail_as(request, kind);
            return;
        }
        if token != inner.token {
            err(401, "Unauthorized")
        } else {
            match method.as_str() {
                "getme" => ok(json!({
                    "id": bot_id_of(&inner.token), "is_bot": true, "first_name": "Piv Test Bot",
                    "username": BOT_USERNAME, "can_join_groups": true,
                    "can_read_all_group_messages": false, "supports_inline_queries": false,
                    "can_connect_to_business": false, "has_main_web_app": false
                })),
                "getupdates" => timed_poll(inner, pid, || get_updates(inner, &params, pid, remote)),
                "sendmessage" => send_message(inner, &params, pid),
                "setmycommands" => set_my_commands(inner, &params),
                "getchat" => forum::get_chat(inner, &params),
                "createforumtopic" => forum::create_forum_topic(inner, &params, pid),
                "editforumtopic" | "closeforumtopic" | "reopenforumtopic" => {
                    forum::change_forum_topic(inner, &method, &params)
                }
                "editmessagetext" => forum::edit_message_text(inner, &params, pid),
                "answercallbackquery" => forum::answer_callback_query(inner, &params, pid),
                "deletewebhook" => ok(json!(true)),
                "getmycommands" => {
                    let last = inner.lock().commands.last().cloned().unwrap_or_default();
                    ok(json!(last
                        .iter()
                        .map(|(c, d)| json!({"command": c, "description": d}))
                        .collect::<Vec<_>>()))
                }
                _ => err(404, "Not Found"),
            }
        }
    } else {
        err(404, "Not Found")
    };
    respond(request, status, &body);
}

/// Answers `request` as an outage would.
fn fail_as(request: crate::http1::Request, kind: Outage) {
    match kind {
        Outage::BadGateway => request.respond(
            502,
            "text/html",
            b"<html><body>502 Bad Gateway</body></html>",
        ),
        // No valid status line: the client sees the connection fail mid-answer.
        Outage::DroppedConnection => request.respond_raw(b"BROKEN\r\n\r\n"),
    }
}

/// Runs one `getUpdates` and records its span (arrival to answer) and caller.
fn timed_poll(
    inner: &Inner,
    pid: Option<u32>,
    poll: impl FnOnce() -> (u16, Value),
) -> (u16, Value) {
    let started = Instant::now();
    let (status, body) = poll();
    inner.lock().poll_spans.push(super::PollSpan {
        pid,
        started,
        ended: Instant::now(),
        status,
    });
    (status, body)
}

fn get_updates(
    inner: &Inner,
    params: &Params,
    pid: Option<u32>,
    remote: Option<SocketAddr>,
) -> (u16, Value) {
    let offset = param_i64(params, "offset");
    let timeout_secs = param_i64(params, "timeout")
        .unwrap_or(0)
        .clamp(0, MAX_POLL_SECS as i64) as u64;
    let limit = param_i64(params, "limit").unwrap_or(100).clamp(1, 100) as usize;
    let allowed: Option<Vec<String>> = param_json(params, "allowed_updates").and_then(|v| {
        v.as_array().map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
    });
    let deadline = Instant::now() + Duration::from_secs(timeout_secs);

    let mut state = inner.lock();
    state.poll_generation += 1;
    let generation = state.poll_generation;
    state.poll_starts.push(PollStart {
        at: Instant::now(),
        offset,
        timeout_secs,
        allowed_updates: allowed.clone(),
        pid,
        remote,
    });
    state.active_poll = Some((generation, pid, remote));
    if let Some(list) = allowed {
        state.allowed_updates = Some(list);
    }
    let instant = state.faults.instant_polls;
    if instant {
        let batch: Vec<Value> = state.updates.iter().take(limit).map(update_json).collect();
        state.active_poll = None;
        drop(state);
        inner.changed.notify_all();
        return ok(Value::Array(batch));
    }
    if let Some(offset) = offset {
        if offset >= 0 {
            state.updates.retain(|u| u.id >= offset);
        } else {
            // A negative offset keeps only the last |offset| updates.
            let keep = offset.unsigned_abs() as usize;
            let len = state.updates.len();
            if len > keep {
                state.updates.drain(..len - keep);
            }
        }
    }
    // Wakes a running poll so that it sees it was superseded.
    inner.changed.notify_all();
    loop {
        if state.stopping {
            return ok(json!([]));
        }
        if state.poll_generation != generation {
            let by_pid = state.active_poll.and_then(|(_, p, _)| p);
            state.conflicts.push(Conflict {
                at: Instant::now(),
                terminated_pid: pid,
                terminated_remote: remote,
                by_pid,
            });
            drop(state);
            inner.changed.notify_all();
            return err(409, CONFLICT_DESCRIPTION);
        }
        let allowed = state.allowed_updates.clone();
        let batch: Vec<Value> = state
            .updates
            .iter()
            .filter(|u| allowed.as_ref().is_none_or(|a| a.contains(&u.kind)))
            .take(limit)
            .map(update_json)
            .collect();
        let now = Instant::now();
        if !batch.is_empty() || now >= deadline {
            if state.active_poll.is_some_and(|(g, _, _)| g == generation) {
                state.active_poll = None;
            }
            return ok(Value::Array(batch));
        }
        state = inner
            .changed
            .wait_timeout(state, deadline - now)
            .unwrap_or_else(|e| e.into_inner())
            .0;
    }
}

fn send_message(inner: &Inner, params: &Params, pid: Option<u32>) -> (u16, Value) {
    let chat_id = param_i64(params, "chat_id");
    let text = param_str(params, "text");
    let parse_mode = param_str(params, "parse_mode");
    let thread_id = param_i64(params, "message_thread_id");
    let buttons = forum::buttons_of(params);
    let now = Instant::now();
    let mut state = inner.lock();
    let reject = |state: &mut State, code: u16, description: String, retry: Option<u64>| {
        state.rejected.push(RejectedSend {
            chat_id,
            text: text.clone(),
            error_code: code,
            description: description.clone(),
            at: now,
            pid,
        });
        (code, api_error(code, &description, retry))
    };
    let Some(chat) = chat_id else {
        return reject(
            &mut state,
            400,
            "Bad Request: chat_id is empty".into(),
            None,
        );
    };
    let Some(body) = text.clone().filter(|t| !t.trim().is_empty()) else {
        return reject(
            &mut state,
            400,
            "Bad Request: message text is empty".into(),
            None,
        );
    };
    let visible = if parse_mode
        .as_deref()
        .is_some_and(|m| m.eq_ignore_ascii_case("html"))
    {
        match parse_telegram_html(&body) {
            Ok(v) => v,
            Err(e) => {
                return reject(
                    &mut state,
                    400,
                    format!("Bad Request: can't parse entities: {e}"),
                    None,
                )
            }
        }
    } else {
        body.clone()
    };
    if visible.chars().map(char::len_utf16).sum::<usize>() > MESSAGE_LIMIT {
        return reject(
            &mut state,
            400,
            "Bad Request: message is too long".into(),
            None,
        );
    }
    if let Some(description) = forum::thread_refusal(&state.room, chat, thread_id) {
        return reject(&mut state, 400, description, None);
    }
    if state.force_429 > 0 {
        state.force_429 -= 1;
        let retry = state.faults.forced_retry_after.unwrap_or(1);
        return reject(
            &mut state,
            429,
            format!("Too Many Requests: retry after {retry}"),
            Some(retry),
        );
    }
    if let (Some(min), Some(last)) = (state.min_interval, state.last_send.get(&chat).copied()) {
        let since = now.saturating_duration_since(last);
        if since < min {
            let retry = (min - since).as_secs_f64().ceil().max(1.0) as u64;
            return reject(
                &mut state,
                429,
                format!("Too Many Requests: retry after {retry}"),
                Some(retry),
            );
        }
    }
    state.next_message_id += 1;
    let message_id = state.next_message_id;
    state.last_send.insert(chat, now);
    state.sent.push(SentMessage {
        message_id,
        chat_id: chat,
        text: body.clone(),
        parse_mode,
        at: now,
        pid,
        thread_id,
        buttons: buttons.clone(),
    });
    state
        .room
        .current
        .insert((chat, message_id), (body.clone(), buttons.clone()));
    let chat_json = forum::chat_json_in(&state.room, chat);
    let in_topic = thread_id.filter(|_| state.room.setup(chat) == forum::ChatSetup::Forum);
    drop(state);
    inner.changed.notify_all();
    let mut message = json!({
        "message_id": message_id,
        "date": unix_now(),
        "chat": chat_json,
        "from": forum::bot_user_json(inner),
        "text": visible,
    });
    if let Some(thread) = in_topic {
        message["message_thread_id"] = json!(thread);
        message["is_topic_message"] = json!(true);
    }
    if let Some(markup) = forum::markup_json(&buttons) {
        message["reply_markup"] = markup;
    }
    ok(message)
}

fn set_my_commands(inner: &Inner, params: &Params) -> (u16, Value) {
    let Some(Value::Array(list)) = param_json(params, "commands") else {
        return err(400, "Bad Request: parameter \"commands\" is required");
    };
    let mut commands = Vec::new();
    for c in list {
        let command = c.get("command").and_then(Value::as_str).unwrap_or("");
        let description = c.get("description").and_then(Value::as_str).unwrap_or("");
        if command.is_empty()
            || command.len() > 32
            || !command
                .chars()
                .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '_')
        {
            return err(400, "Bad Request: BOT_COMMAND_INVALID");
        }
        if description.chars().count() < 1 || description.chars().count() > 256 {
            return err(400, "Bad Request: BOT_COMMAND_DESCRIPTION_INVALID");
        }
        commands.push((command.to_string(), description.to_string()));
    }
    inner.lock().commands.push(commands);
    inner.changed.notify_all();
    ok(json!(true))
}

fn test_api(inner: &Inner, what: &str, params: &Params) -> (u16, Value) {
    let ms = |at: Instant| at.saturating_duration_since(inner.started).as_millis() as u64;
    match what {
        "sent" => {
            let state = inner.lock();
            ok(json!(state
                .sent
                .iter()
                .map(|m| json!({
                    "message_id": m.message_id, "chat_id": m.chat_id, "text": m.text,
                    "parse_mode": m.parse_mode, "at_ms": ms(m.at), "pid": m.pid,
                    "thread_id": m.thread_id, "buttons": m.buttons
                }))
                .collect::<Vec<_>>()))
        }
        "state" => {
            let state = inner.lock();
            ok(json!({
                "poll_starts": state.poll_starts.iter().map(|p| json!({
                    "at_ms": ms(p.at), "offset": p.offset, "pid": p.pid
                })).collect::<Vec<_>>(),
                "conflicts": state.conflicts.iter().map(|c| json!({
                    "at_ms": ms(c.at), "terminated_pid": c.terminated_pid, "by_pid": c.by_pid
                })).collect::<Vec<_>>(),
                "rejected": state.rejected.iter().map(|r| json!({
                    "at_ms": ms(r.at), "error_code": r.error_code, "description": r.description, "pid": r.pid
                })).collect::<Vec<_>>(),
                "pending_update_ids": state.updates.iter().map(|u| u.id).collect::<Vec<_>>(),
                "commands": state.commands,
            }))
        }
        "inject" => {
            let Some(chat_id) = param_i64(params, "chat_id") else {
                return err(400, "chat_id required");
            };
            let edited = params
                .get("edited")
                .is_some_and(|v| v == &json!(true) || v == "true");
            let thread = param_i64(params, "thread_id");
            let id = match param_str(params, "text") {
                Some(text) if thread.is_some() => {
                    forum::inject_topic_text(inner, chat_id, thread.unwrap_or(0), &text)
                }
                Some(text) => inject_text(inner, chat_id, &text, edited),
                None => {
                    let mut message = base_message(inner, chat_id);
                    message["photo"] =
                        json!([{"file_id": "x", "file_unique_id": "y", "width": 1, "height": 1}]);
                    inject_update(inner, "message", message)
                }
            };
            ok(json!({"update_id": id}))
        }
        "room" | "chat" | "tap" => forum::test_api(inner, what, params),
        "rate_limit" => {
            let interval = param_i64(params, "min_interval_ms")
                .filter(|ms| *ms > 0)
                .map(|ms| Duration::from_millis(ms as u64));
            inner.lock().min_interval = interval;
            ok(json!(true))
        }
        "force_429" => {
            inner.lock().force_429 = param_i64(params, "count").unwrap_or(0).max(0) as usize;
            ok(json!(true))
        }
        _ => err(404, "Not Found"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%20b+c%3A"), "a b c:");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
    }
}
