//! The registry on disk: every read-modify-write of `registry.json` under the exclusive `registry.lock`, liveness by per-instance locks.
