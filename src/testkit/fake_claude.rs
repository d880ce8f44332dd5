//! A scripted stand-in for the `claude` CLI that speaks real stream-json: told per command to succeed, fail, exit non-zero, hang or print garbage.
