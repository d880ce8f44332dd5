//! Signals between instances: the signal file's model, its validation, and queue file names that sort by send time.
