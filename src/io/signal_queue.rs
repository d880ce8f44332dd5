//! The per-project signal queue on disk: enqueue atomically under a sortable, collision-free name; claim, reject and remove files.
