"""Compile a graph cell in a child process and load the compiled graph here.

MindSpore's graph compiler frees most of what it allocates, but the freed chunks stay between live
ones in glibc's heap, which ``malloc_trim`` cannot return (0.77 GiB after compiling the 256x256
batch-2 train step; ``python -m bench.bench_memory --parts resident``). A process that loads the
compiled graph from MindSpore's compile cache skips the frontend's compilation and that heap with
it. ``compile_in_child`` therefore has a spawned child build the same cell and compile it into a new
temporary cache folder, then compiles the cell here from that folder and deletes it.

The cache holds the graph, not the parameters' values, and MindSpore loads it without comparing it
with the cell (a cached graph of another cell runs silently; the seeds of the graph's random
operators are the child's). So the child builds the cell with the caller's own builder and
arguments, and the cell's ``cell_fingerprint`` must equal the child's, or the cell is compiled here
as usual.
"""
import hashlib
import multiprocessing
import os
import shutil
import tempfile
import time
from contextlib import contextmanager

from src.utils.runtime import compile_then_release

FINGERPRINT_FILE = "cell_fingerprint.txt"
CACHE_ENV = ("MS_COMPILER_CACHE_ENABLE", "MS_COMPILER_CACHE_PATH")


def _value_digest(value):
    """A stable text for one attribute value; None for values that do not describe the graph."""
    import numpy as np
    from mindspore import Parameter, Tensor
    from mindspore.ops import Primitive

    if value is None or isinstance(value, (bool, int, float, str)):
        return repr(value)
    if isinstance(value, (tuple, list)):
        items = [_value_digest(v) for v in value]
        return None if None in items else f"{type(value).__name__}({', '.join(items)})"
    if isinstance(value, Parameter):  # its value is this process's; name and shape are in the fingerprint
        return None
    if isinstance(value, Primitive):
        return f"{value.name}{sorted((k, repr(v)) for k, v in value.attrs.items())}"
    if isinstance(value, (Tensor, np.ndarray)):
        array = np.ascontiguousarray(value.asnumpy() if isinstance(value, Tensor) else value)
        return f"{array.dtype}{array.shape}:{hashlib.sha256(array.tobytes()).hexdigest()}"
    return None


def cell_fingerprint(cell, specs):
    """SHA-256 over what a cached graph of ``cell`` depends on, apart from the code (MindSpore
    compares the hashes of the entry script and the files it imports itself): every sub-cell's
    class and public attributes of simple types, primitives (with their attributes) and constant
    tensors (by content), every parameter's name, shape, dtype and trainability, and the input
    ``specs`` [(shape, numpy dtype name), ...]."""
    lines = [f"inputs {specs}"]
    for name, sub in cell.cells_and_names():
        lines.append(f"cell {name} {type(sub).__module__}.{type(sub).__qualname__}")
        for key in sorted(vars(sub)):
            if key.startswith("_") or key == "arguments_key":
                continue
            digest = _value_digest(vars(sub)[key])
            if digest is not None:
                lines.append(f"  {key} = {digest}")
    for param in cell.get_parameters():
        lines.append(f"param {param.name} {tuple(param.shape)} {param.dtype} {param.requires_grad}")
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def input_specs(inputs):
    """[(shape, numpy dtype name), ...] of ``inputs`` (Tensors): all that a compilation uses of them."""
    import numpy as np
    return [(tuple(int(d) for d in x.shape), np.dtype(str(x.dtype).lower()).name) for x in inputs]  # Float32 -> float32


@contextmanager
def _compile_cache(folder):
    """MindSpore's compile cache on, in ``folder``, for the compilations inside the block only."""
    saved = {k: os.environ.get(k) for k in CACHE_ENV}
    os.environ.update(MS_COMPILER_CACHE_ENABLE="1", MS_COMPILER_CACHE_PATH=folder)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _write_cache(build, build_args, specs, folder):
    """Child process: build the cell, write its fingerprint, compile it into ``folder``."""
    import mindspore as ms
    import numpy as np

    cell = build(*build_args)
    with open(os.path.join(folder, FINGERPRINT_FILE), "w", encoding="utf-8") as f:
        f.write(cell_fingerprint(cell, specs))
    with _compile_cache(folder):
        cell.compile(*[ms.Tensor(np.zeros(shape, dtype)) for shape, dtype in specs])


def _files_written(folder):
    """{path: (size, modification time)} of the files under ``folder``."""
    state = {}
    for root, _, names in os.walk(folder):
        for name in names:
            info = os.stat(os.path.join(root, name))
            state[os.path.join(root, name)] = (info.st_size, info.st_mtime_ns)
    return state


def compile_in_child(cell, inputs, build, build_args=(), log=print):
    """Compile ``cell`` (an ``nn.Cell``, GRAPH_MODE) for ``inputs`` (Tensors) from a compile cache
    that a spawned child process writes; then ``release_free_heap``.

    ``build(*build_args)`` (a module-level function and picklable arguments) must return, in a fresh
    process, the cell that this process built: it sets up MindSpore's context (mode, device, seed)
    as this process did, and builds the cell in the same order, so that the graph's random
    operators get the same seeds. Where the child fails, or its cell's ``cell_fingerprint`` differs
    from ``cell``'s, ``cell`` is compiled here instead (``compile_then_release``), with a warning;
    so it is where MindSpore does not load the cache (it compares the hashes of the source files
    with the child's). Returns True where the compiled graph came from the child.
    """
    specs = input_specs(inputs)
    folder = tempfile.mkdtemp(prefix="compile_in_child_")
    try:
        start = time.perf_counter()
        # The child's MindSpore warnings are about the empty cache it fills; keep its errors.
        saved_level = os.environ.get("GLOG_v")
        os.environ.setdefault("GLOG_v", "3")
        try:
            child = multiprocessing.get_context("spawn").Process(
                target=_write_cache, args=(build, tuple(build_args), specs, folder), daemon=True)
            child.start()
        finally:
            if saved_level is None:
                os.environ.pop("GLOG_v", None)
        child.join()
        fingerprint_path = os.path.join(folder, FINGERPRINT_FILE)
        if child.exitcode != 0:
            log(f"warning: compiling in a child process failed (exit code {child.exitcode}); compiling here")
        elif not os.path.isfile(fingerprint_path):
            log(f"warning: the child process wrote no {FINGERPRINT_FILE}; compiling here")
        else:
            with open(fingerprint_path, encoding="utf-8") as f:
                child_fingerprint = f.read()
            if child_fingerprint != cell_fingerprint(cell, specs):
                log("warning: the child process built a different cell (attributes, parameters or inputs differ); "
                    "compiling here")
            else:
                compiled = time.perf_counter()
                written = _files_written(folder)
                with _compile_cache(folder):
                    compile_then_release(cell, *inputs)
                if _files_written(folder) == written:
                    log(f"compiled in a child process in {compiled - start:.1f} s, loaded here in "
                        f"{time.perf_counter() - compiled:.1f} s")
                    return True
                # MindSpore compiled the cell in full and wrote its cache anew
                log("warning: MindSpore did not load the child's compiled graph (a source file changed "
                    "meanwhile?); compiled here")
                return False
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    compile_then_release(cell, *inputs)
    return False
