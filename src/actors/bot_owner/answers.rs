//! The bot owner's answers: one update from the chat turned into a reply — the command
//! parsed and routed within the chat's view, statuses probed, a control or a signal sent.

use super::*;

impl Poller {
    pub(super) async fn handle(&self, update: &IncomingUpdate) {
        let Some(chat_id) = update.chat_id else {
            tracing::debug!(
                update_id = update.update_id,
                "ignoring a non-message update"
            );
            return;
        };
        let others = self.other_instances().await;
        if !is_allowed_chat(chat_id, &allowed_chats(self.own, &others)) {
            tracing::info!(
                update_id = update.update_id,
                chat_id,
                "ignoring a message from a chat not on the allow-list"
            );
            return;
        }
        if let Some(tap) = &update.tap {
            // An escalation's button (issue 14): answered at once, acted on at most once.
            let targets = crate::io::button_tap::targets(&self.prefix, &self.project_dir, &others);
            let from = format!("button via {}", self.prefix);
            // Its edits are charged to the bot's send budget, like every message.
            let sender = crate::io::chat_sender::ChatSender::new(
                self.client.clone(),
                crate::io::home::bot_dir(&self.home, self.own.bot_id),
            )
            .with_coordination(Some(self.coordination.clone()));
            crate::io::button_tap::handle_tap(&self.client, &sender, tap, &targets, &from).await;
            return;
        }
        let Some(command) = update
            .text
            .as_deref()
            .and_then(|text| parse_command(text, self.bot_username.as_deref()))
        else {
            match update.text.as_deref() {
                // Free text: for an open PRD relay, or ignored (issue 14, behaviour.md §9.1).
                Some(text) if !text.trim_start().starts_with('/') => {
                    self.relay_text(update, chat_id, text, &others).await
                }
                _ => tracing::debug!(
                    update_id = update.update_id,
                    "ignoring a message that is not a command"
                ),
            }
            return;
        };
        // Typed inside a project's forum topic: for that project (issue 14).
        let command = match room_reads::project_of_topic(
            &crate::io::home::bot_dir(&self.home, self.own.bot_id),
            chat_id,
            update.topic,
        )
        .await
        {
            Some(prefix) => in_topic_of(command, &prefix),
            None => command,
        };
        tracing::info!(
            update_id = update.update_id,
            chat_id,
            ?command,
            "Telegram command"
        );
        let view = ChatView::new(self, chat_id, &others);
        let now = chrono::Utc::now().timestamp();
        let (tag, html) = match &command {
            Command::Control(action, target)
                if acts(&command) && is_stale(update.date, now, self.stale_command_secs) =>
            {
                tracing::info!(update_id = update.update_id, sent = ?update.date,
                    "not acting on a stale Telegram command");
                let sent = update.date.unwrap_or(now);
                let text = reply_stale(
                    *action,
                    target.as_deref(),
                    sent,
                    now,
                    self.stale_command_secs,
                );
                (view.tag(&self.prefix), text)
            }
            // The relay answers in the chat itself; only a failure to reach it is replied.
            Command::Control(action, target) if action.is_prd() => {
                match self.prd_command(*action, target.as_deref(), &view).await {
                    Some(reply) => reply,
                    None => return,
                }
            }
            _ => self.answer(command, &view).await,
        };
        // The update counts as handled once its reply was sent (see `QueueReply`).
        let reply = QueueReply {
            chat_id,
            thread: update.topic,
            tag,
            html,
        };
        if let Err(e) = self.notifier.send(reply).await {
            tracing::warn!(error = %e, "cannot queue a reply to a Telegram command");
        }
    }

    /// The reply to a command in `view`'s chat and the prefix to tag it with.
    async fn answer(&self, command: Command, view: &ChatView) -> (String, String) {
        let own = self.prefix.clone();
        let tag = view.tag(&own);
        match command {
            Command::Help => (tag, format_help()),
            Command::Preflight(target) => match self.project_for(view, target.as_deref()) {
                Ok((prefix, dir)) => (prefix, room_reads::preflight_of(dir).await),
                Err(reply) => (tag, reply),
            },
            Command::Logs(target, n) => match self.project_for(view, target.as_deref()) {
                Ok((prefix, dir)) => (prefix, room_reads::logs_of(dir, n, &self.client).await),
                Err(reply) => (tag, reply),
            },
            Command::Unknown(name) => (tag, reply_unknown_command(&name)),
            Command::Cost(project) => {
                // A chat the owner does not report to sees only its own projects' costs.
                let only = (!view.owner_in_chat)
                    .then(|| view.others.iter().map(|i| i.prefix.clone()).collect());
                (tag, self.cost_reply(project, only).await)
            }
            Command::Status(StatusTarget::This) if view.owner_in_chat => {
                (own, self.own_status().await)
            }
            Command::Status(StatusTarget::This) => match view.others.as_slice() {
                [one] => {
                    let (status, view) = probe_other(one).await;
                    (one.prefix.clone(), status_reply(&status, view.as_ref()))
                }
                _ => (tag, self.all_status(view).await),
            },
            Command::Status(StatusTarget::All) => (tag, self.all_status(view).await),
            Command::Status(StatusTarget::Prefix(target)) => {
                let (view, elsewhere) = self.with_other_machines(view).await;
                match view.route(Some(&target), &own) {
                    Route::Remote(other) => match elsewhere::find_published(&elsewhere, other) {
                        // On another machine: the status it published.
                        Some(p) => (other.prefix.clone(), status_reply(&p.status, None)),
                        None => {
                            let (status, view) = probe_other(other).await;
                            (other.prefix.clone(), status_reply(&status, view.as_ref()))
                        }
                    },
                    Route::UnknownPrefix { prefix, known } => {
                        (tag, reply_unknown_prefix(&prefix, &known))
                    }
                    Route::Local | Route::AskWhich { .. } => (own.clone(), self.own_status().await),
                }
            }
            Command::Control(action, target) => {
                let (view, elsewhere) = self.with_other_machines(view).await;
                let reply = match view.route(target.as_deref(), &own) {
                    Route::Local => self.control_locally(action).await,
                    Route::Remote(other) => match elsewhere::find_published(&elsewhere, other) {
                        Some(target) => {
                            elsewhere::signal(&*self.coordination, target, action, &self.prefix)
                                .await
                        }
                        None => self.signal_other(other, action).await,
                    },
                    Route::AskWhich { prefixes } => reply_ask_which(action, &prefixes),
                    Route::UnknownPrefix { prefix, known } => reply_unknown_prefix(&prefix, &known),
                };
                (tag, reply)
            }
        }
    }

    /// `/create_prd` or `/end_prd` for the project `target` names (or the chat's one
    /// project): a signal on that instance's queue, as for `/pause b`. None when it was
    /// queued (the relay itself answers); else the reply (ask which, unknown prefix, error).
    async fn prd_command(
        &self,
        action: ControlAction,
        target: Option<&str>,
        view: &ChatView,
    ) -> Option<(String, String)> {
        let own = self.prefix.clone();
        let tag = view.tag(&own);
        let (view, elsewhere) = self.with_other_machines(view).await;
        let (prefix, dir) = match view.route(target, &own) {
            Route::Local => (own.clone(), self.project_dir.clone()),
            Route::Remote(other) => match elsewhere::find_published(&elsewhere, other) {
                Some(there) => {
                    let reply = elsewhere::signal(&*self.coordination, there, action, &own).await;
                    return Some((tag, reply));
                }
                None => (other.prefix.clone(), PathBuf::from(&other.project_dir)),
            },
            Route::AskWhich { prefixes } => return Some((tag, reply_ask_which(action, &prefixes))),
            Route::UnknownPrefix { prefix, known } => {
                return Some((tag, reply_unknown_prefix(&prefix, &known)))
            }
        };
        self.enqueue_prd(dir, &prefix, action, None)
            .await
            .map(|error| (tag, error))
    }

    /// Queues a relay signal for the instance on `dir`; the error reply if it could not.
    async fn enqueue_prd(
        &self,
        dir: PathBuf,
        prefix: &str,
        action: ControlAction,
        text: Option<String>,
    ) -> Option<String> {
        let message = crate::core::signal::SignalMessage {
            action,
            timestamp: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            from: self.prefix.clone(),
            escalation: None,
            text,
        };
        let queued =
            tokio::task::spawn_blocking(move || signal_queue::enqueue_message(&dir, &message))
                .await;
        let error = match queued {
            Ok(Ok(path)) => {
                tracing::info!(to = %prefix, action = action.as_str(), file = %path.display(),
                    "routed a PRD relay message");
                return None;
            }
            Ok(Err(e)) => e.to_string(),
            Err(e) => e.to_string(),
        };
        tracing::warn!(error = %error, "cannot queue a PRD relay signal");
        Some(format!(
            "⚠️ Could not send /{} to [{}]: {}",
            action.command_name(),
            crate::core::telegram_text::escape_html(prefix),
            crate::core::telegram_text::escape_html(&error)
        ))
    }

    /// Free text in an allowed chat: to the relay `core::prd_relay::text_target` picks
    /// (the topic's project, or the chat's one open relay), else ignored.
    async fn relay_text(
        &self,
        update: &IncomingUpdate,
        chat_id: i64,
        text: &str,
        others: &[Instance],
    ) {
        use crate::core::prd_relay::{reply_several_open, text_target, TextTarget};
        if is_stale(
            update.date,
            chrono::Utc::now().timestamp(),
            self.stale_command_secs,
        ) {
            tracing::info!(update_id = update.update_id, "not relaying a stale message");
            return;
        }
        let topic_project = room_reads::project_of_topic(
            &crate::io::home::bot_dir(&self.home, self.own.bot_id),
            chat_id,
            update.topic,
        )
        .await;
        let view = ChatView::new(self, chat_id, others);
        // The chat's projects on this machine, whose open marks can be read.
        let mut here: Vec<(String, PathBuf)> = Vec::new();
        if view.owner_in_chat {
            here.push((self.prefix.clone(), self.project_dir.clone()));
        }
        here.extend(
            view.others
                .iter()
                .map(|i| (i.prefix.clone(), PathBuf::from(&i.project_dir))),
        );
        if let Some(project) = &topic_project {
            if !here.iter().any(|(p, _)| p == project) {
                // A topic of a project on another machine: its relay decides (closed:
                // it ignores the text).
                let (_, elsewhere) = self.with_other_machines(&view).await;
                if let Some(there) = elsewhere.iter().find(|p| &p.status.prefix == project) {
                    let reply = elsewhere::signal_with_text(
                        &*self.coordination,
                        there,
                        ControlAction::PrdText,
                        &self.prefix,
                        Some(text.to_string()),
                    )
                    .await;
                    tracing::info!(to = %project, %reply, "relayed free text to another machine");
                }
                return;
            }
        }
        let marks = here.clone();
        let open: Vec<String> = tokio::task::spawn_blocking(move || {
            marks
                .into_iter()
                .filter(|(_, dir)| crate::io::prd_relay_file::is_open(dir))
                .map(|(p, _)| p)
                .collect()
        })
        .await
        .unwrap_or_default();
        match text_target(topic_project.as_deref(), &open) {
            TextTarget::Relay(prefix) => {
                let Some((_, dir)) = here.into_iter().find(|(p, _)| *p == prefix) else {
                    return;
                };
                let error = self
                    .enqueue_prd(dir, &prefix, ControlAction::PrdText, Some(text.to_string()))
                    .await;
                if let Some(html) = error {
                    self.reply(chat_id, update.topic, view.tag(&self.prefix), html)
                        .await;
                }
            }
            TextTarget::Ambiguous(open) => {
                let html = reply_several_open(&open);
                self.reply(chat_id, update.topic, view.tag(&self.prefix), html)
                    .await;
            }
            TextTarget::Ignore => tracing::debug!(
                update_id = update.update_id,
                "ignoring a message that is not a command"
            ),
        }
    }

    async fn reply(&self, chat_id: i64, thread: Option<i64>, tag: String, html: String) {
        let reply = QueueReply {
            chat_id,
            thread,
            tag,
            html,
        };
        if let Err(e) = self.notifier.send(reply).await {
            tracing::warn!(error = %e, "cannot queue a reply to a Telegram message");
        }
    }

    /// The project a `/preflight` or `/logs` is about: its prefix and directory, or the
    /// reply asking which (several, no prefix) or naming an unknown prefix.
    fn project_for(
        &self,
        view: &ChatView,
        target: Option<&str>,
    ) -> Result<(String, PathBuf), String> {
        let own = self.prefix.clone();
        if target.is_none() && !view.owner_in_chat {
            if let [one] = view.others.as_slice() {
                return Ok((one.prefix.clone(), PathBuf::from(&one.project_dir)));
            }
        }
        match view.route(target, &own) {
            Route::Local => Ok((own, self.project_dir.clone())),
            Route::Remote(other) => Ok((other.prefix.clone(), PathBuf::from(&other.project_dir))),
            Route::AskWhich { prefixes } => Err(format!(
                "Which project? Name one: {}",
                crate::core::telegram_text::escape_html(&prefixes.join(", "))
            )),
            Route::UnknownPrefix { prefix, known } => Err(reply_unknown_prefix(&prefix, &known)),
        }
    }

    /// `/cost [prefix]`: the same report as `piv cost`, in a `<pre>` block; with `only`,
    /// restricted to those projects (a chat sees only its own instances).
    async fn cost_reply(&self, project: Option<String>, only: Option<Vec<String>>) -> String {
        let home = self.home.clone();
        let report = tokio::task::spawn_blocking(move || {
            crate::io::ledger_file::cost_report(
                &home,
                &crate::io::ledger_file::today_utc(),
                None,
                project.as_deref(),
            )
            .map(|report| match &only {
                Some(visible) => crate::core::bot_chats::cost_seen_in_chat(report, visible),
                None => report,
            })
        })
        .await;
        match report {
            Ok(Ok(report)) => format!(
                "<b>Cost</b> (UTC days)\n<pre>{}</pre>",
                crate::core::telegram_text::escape_html(
                    crate::core::ledger::render(&report).trim_end()
                )
            ),
            Ok(Err(e)) => format!(
                "⚠️ cannot read the cost ledger: {}",
                crate::core::telegram_text::escape_html(&e.to_string())
            ),
            Err(e) => format!("⚠️ cannot read the cost ledger: {e}"),
        }
    }

    async fn control_locally(&self, action: ControlAction) -> String {
        let by = "telegram".to_string();
        match self.control.send(Control { action, by }).await {
            Ok(reply) => reply.text().to_string(),
            Err(e) => {
                tracing::warn!(error = %e, "the phase runner did not take a Telegram command");
                format!("⚠️ Could not reach the runner: {e}")
            }
        }
    }

    async fn signal_other(&self, other: &Instance, action: ControlAction) -> String {
        let dir = PathBuf::from(&other.project_dir);
        let from = self.prefix.clone();
        let queued =
            tokio::task::spawn_blocking(move || signal_queue::enqueue(&dir, action, &from)).await;
        match queued {
            Ok(Ok(path)) => {
                tracing::info!(to = %other.prefix, action = action.as_str(), file = %path.display(),
                    "routed a Telegram command to another instance");
                reply_sent(action, &other.prefix)
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot queue a signal for another instance");
                format!(
                    "⚠️ Could not send /{} to [{}]: {}",
                    action.as_str(),
                    crate::core::telegram_text::escape_html(&other.prefix),
                    crate::core::telegram_text::escape_html(&e.to_string())
                )
            }
            Err(e) => format!("⚠️ Could not send /{}: {e}", action.as_str()),
        }
    }

    /// `view` with the instances on other machines added (from the registry across
    /// machines), and those instances as they published themselves.
    async fn with_other_machines(
        &self,
        view: &ChatView,
    ) -> (ChatView, Vec<crate::core::machines::PublishedInstance>) {
        let local = self.other_instances().await;
        let elsewhere =
            elsewhere::other_machines(&*self.coordination, &self.project_dir, &local).await;
        let mut others = view.others.clone();
        others.extend(elsewhere.iter().map(elsewhere::as_instance));
        let view = ChatView {
            owner_in_chat: view.owner_in_chat,
            others,
        };
        (view, elsewhere)
    }

    /// The registered instances other than this one (none without a registry).
    async fn other_instances(&self) -> Vec<Instance> {
        let Some(registry) = &self.registry else {
            return Vec::new();
        };
        let own_dir = self.project_dir.display().to_string();
        match registry.send(ListInstances).await {
            Ok(Ok(list)) => list
                .into_iter()
                .filter(|i| i.project_dir != own_dir)
                .collect(),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot list instances");
                Vec::new()
            }
            Err(e) => {
                tracing::warn!(error = %e, "registry unreachable");
                Vec::new()
            }
        }
    }

    fn own_facts(&self) -> InstanceFacts {
        InstanceFacts {
            prefix: self.prefix.clone(),
            project_dir: self.project_dir.display().to_string(),
            pid: Some(std::process::id()),
            is_bot_owner: true,
            started_at_unix_secs: None,
        }
    }

    async fn own_status(&self) -> String {
        let (status, view) = probe_blocking(self.own_facts(), self.project_dir.clone()).await;
        status_reply(&status, view.as_ref())
    }

    /// `/status all` in `view`'s chat: this instance if it reports there, and the
    /// chat's other instances.
    async fn all_status(&self, view: &ChatView) -> String {
        let mut statuses = Vec::new();
        if view.owner_in_chat {
            statuses.push(
                probe_blocking(self.own_facts(), self.project_dir.clone())
                    .await
                    .0,
            );
        }
        for other in &view.others {
            statuses.push(probe_other(other).await.0);
        }
        // The other machines' instances, from the registry across machines.
        let published = self.coordination.published_instances().await;
        let statuses =
            crate::core::machines::merge(statuses, &crate::io::coordination::hostname(), published);
        multi_status_reply(&statuses)
    }
}

/// A chat as a command from it sees the instances: whether the owner itself reports to
/// it, and the other live instances of the bot that do (`core::bot_chats`).
struct ChatView {
    owner_in_chat: bool,
    others: Vec<Instance>,
}

impl ChatView {
    fn new(poller: &Poller, chat_id: i64, others: &[Instance]) -> ChatView {
        ChatView {
            owner_in_chat: chat_id == poller.own.chat_id,
            others: instances_in_chat(others, poller.own, chat_id),
        }
    }

    /// The tag of a reply about no one instance: the owner's prefix in its own chat;
    /// elsewhere the chat's one instance, or `piv`.
    fn tag(&self, own_prefix: &str) -> String {
        match (self.owner_in_chat, self.others.as_slice()) {
            (true, _) => own_prefix.to_string(),
            (false, [one]) => one.prefix.clone(),
            (false, _) => "piv".to_string(),
        }
    }

    /// Where a command for `target` goes among the instances this chat sees.
    fn route<'a>(&'a self, target: Option<&str>, own_prefix: &str) -> Route<'a> {
        if self.owner_in_chat {
            route(target, own_prefix, &self.others)
        } else {
            route_among(target, &self.others)
        }
    }
}

/// A status and its manifest view (for the phase table), read off the actor thread.
type Probed = (InstanceStatus, Option<ManifestView>);

async fn probe_blocking(facts: InstanceFacts, dir: PathBuf) -> Probed {
    let fallback = facts.clone();
    tokio::task::spawn_blocking(move || {
        let status = status_probe::probe(&facts, &dir);
        let view = manifest_file::read(&dir).ok().and_then(|m| m.view().ok());
        (status, view)
    })
    .await
    .unwrap_or_else(|e| {
        let mut status = crate::core::status::build_status(
            &fallback,
            None,
            Err(e.to_string()),
            chrono::Utc::now().timestamp(),
        );
        status.error = Some(format!("status probe failed: {e}"));
        (status, None)
    })
}

async fn probe_other(other: &Instance) -> Probed {
    // This instance owns the bot, whatever another entry's mark still says.
    let facts = InstanceFacts {
        is_bot_owner: false,
        ..InstanceFacts::of(other)
    };
    probe_blocking(facts, PathBuf::from(&other.project_dir)).await
}
