//! The Bot API client: a teloxide `Bot` pointed at `TELEGRAM_API_URL`, and the one place where errors are redacted so the token never leaks.
