"""Atomic file writes: a reader never sees a half-written result, metrics, log or model file.

Data goes to a temporary file next to the target (``os.replace`` is atomic only within one file
system), which is renamed over the target on success and deleted on error. Missing parent folders
are created. Every published file of the project is written through this module.
"""
import contextlib
import json
import os
import tempfile


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path for a writer that takes a file name; it replaces ``path`` when the
    ``with`` block completes.

    The temporary name ends with ``path``'s extension, for writers that pick the format from it
    (``cv2.imwrite``) or append it when missing (``mindspore.export``).
    """
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    suffix = os.path.splitext(path)[1]
    fd, tmp = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(path) + ".", suffix=".tmp" + suffix)
    os.close(fd)
    try:
        yield tmp
        # mkstemp creates the file owner-only; results are meant to be shared like any output.
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


@contextlib.contextmanager
def atomic_open(path, mode="w"):
    """Open ``path`` for writing (``mode`` "w" text UTF-8 or "wb" binary) through ``atomic_path``."""
    with atomic_path(path) as tmp:
        if "b" in mode:
            with open(tmp, mode) as f:
                yield f
                f.flush()
                os.fsync(f.fileno())
        else:
            with open(tmp, mode, encoding="utf-8", newline="") as f:
                yield f
                f.flush()
                os.fsync(f.fileno())


def write_text_atomic(path, text):
    """Write ``text`` to ``path`` atomically."""
    with atomic_open(path) as f:
        f.write(text)


def write_json_atomic(path, obj, indent=None):
    """Serialise ``obj`` as JSON straight into ``path``, atomically (no full string in memory: COCO
    mask results can reach hundreds of MB). Compact unless ``indent`` is given."""
    with atomic_open(path) as f:
        json.dump(obj, f, indent=indent, separators=None if indent else (",", ":"))

