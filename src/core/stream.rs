//! Claude Code stream-json: parsing one stdout line into an event and accumulating a session's outcome (pure).
