//! Advisory file locks (flock-style, std `File::lock`): each lock file, its mode and who holds it. Locks are advisory and released by the kernel when the holder dies.
