"""Atomic file writes: a reader never sees a half-written result or metrics file."""
import json
import os
import tempfile


def write_text_atomic(path, text):
    """Write ``text`` to ``path`` through a temporary file in the same folder, then rename.

    The rename is atomic on POSIX and Windows when source and target share a file system, which
    is why the temporary file lives next to the target. Missing parent folders are created.
    """
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        # mkstemp creates the file owner-only; results are meant to be shared like any output.
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def write_json_atomic(path, obj):
    """Serialise ``obj`` as compact JSON and write it atomically to ``path``."""
    write_text_atomic(path, json.dumps(obj, separators=(",", ":")))
