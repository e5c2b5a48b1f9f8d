"""Process-level helpers used everywhere: runtime setup, user errors, atomic writes, progress, drawing."""
