"""Atomic file writes: a reader never sees a half-written result, metrics or log file."""
import contextlib
import json
import os
import tempfile


@contextlib.contextmanager
def atomic_open(path):
    """Open a text file that replaces ``path`` only once the ``with`` block completes.

    Data goes to a temporary file next to ``path`` (``os.replace`` is atomic only within one file
    system), which is renamed over ``path`` on success and deleted on error. Missing parent
    folders are created.
    """
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        # mkstemp creates the file owner-only; results are meant to be shared like any output.
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def write_text_atomic(path, text):
    """Write ``text`` to ``path`` atomically."""
    with atomic_open(path) as f:
        f.write(text)


def write_json_atomic(path, obj):
    """Serialise ``obj`` as compact JSON straight into ``path``, atomically (no full string in
    memory: COCO mask results can reach hundreds of MB)."""
    with atomic_open(path) as f:
        json.dump(obj, f, separators=(",", ":"))
