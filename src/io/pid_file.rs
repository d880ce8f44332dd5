//! The per-project PID file `.agents/orchestrator.pid`: refuse a second `piv run`, replace a stale one, remove on exit.
