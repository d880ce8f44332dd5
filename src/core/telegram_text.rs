//! Telegram text: HTML escaping, `[prefix] ` tagging, splitting under 4096 characters, and the status messages.
