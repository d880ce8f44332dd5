//! Git for checkpoints: tags before execute, rollback to a tag, and the few queries the loop needs.
