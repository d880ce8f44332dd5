//! One Claude Code session as a child process: spawn in its own process group, read stream-json line by line with bounded memory, enforce timeout and stall limits, stop the whole group.
