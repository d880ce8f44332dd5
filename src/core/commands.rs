//! Telegram commands: parsing a chat message into a typed command and deciding where it goes (pure routing).
