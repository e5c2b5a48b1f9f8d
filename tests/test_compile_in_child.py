"""``compile_in_child``: a graph compiled by a spawned child and loaded from its compile cache
computes what the same graph compiled here does, random operators included; a child that builds
another cell, or fails, leaves the compilation to this process."""
import os
from contextlib import contextmanager

import numpy as np
import pytest

import mindspore as ms
from mindspore import Parameter, Tensor, nn, ops

from src.utils.compile_in_child import cell_fingerprint, compile_in_child, input_specs

CACHE_LOADED = "Use the compilation cache and execute the backend actions only"


class NoisyDense(nn.Cell):
    """x (N, 8) -> x @ w (N, out) plus uniform noise from ``ops.rand`` (seeded at compile time)."""

    def __init__(self, out=4, scale=0.5):
        super().__init__()
        self.scale = scale
        self.w = Parameter(Tensor(np.random.default_rng(0).normal(size=(8, out)).astype(np.float32)), name="w")

    def construct(self, x):
        return ops.matmul(x, self.w) + self.scale * ops.rand(x.shape[0], self.w.shape[1])


def build_noisy_dense(seed, out=4):
    """The builder the child runs: context and seed as the test sets them, then the cell."""
    ms.set_context(mode=ms.GRAPH_MODE)
    ms.set_device("CPU")
    ms.set_seed(seed)
    return NoisyDense(out)


def build_nothing(seed):
    raise RuntimeError(f"no cell for seed {seed}")


def inputs():
    return [Tensor(np.arange(16, dtype=np.float32).reshape(2, 8) / 16)]


def two_calls(cell, x):
    return [cell(*x).asnumpy() for _ in range(2)]


def compiled_here(seed):
    cell = build_noisy_dense(seed)
    x = inputs()
    cell.compile(*x)
    return two_calls(cell, x)


def test_a_graph_from_the_child_computes_what_one_compiled_here_does(capfd):
    cell = build_noisy_dense(3)
    x = inputs()
    lines = []
    assert compile_in_child(cell, x, build_noisy_dense, (3,), log=lines.append)
    assert CACHE_LOADED in capfd.readouterr().err
    assert len(lines) == 1 and "compiled in a child process" in lines[0]
    child = two_calls(cell, x)
    here = compiled_here(3)
    for a, b in zip(child, here):
        np.testing.assert_array_equal(a, b)
    # the noise is there (so equal outputs mean equal seeds) and differs with the seed
    exact = x[0].asnumpy() @ cell.w.asnumpy()
    assert np.abs(child[0] - exact).max() > 1e-3
    assert np.abs(compiled_here(4)[0] - child[0]).max() > 1e-3


def test_a_child_that_builds_another_cell_leaves_the_compilation_here(capfd):
    cell = build_noisy_dense(3)
    x = inputs()
    lines = []
    assert not compile_in_child(cell, x, build_noisy_dense, (3, 5), log=lines.append)
    assert CACHE_LOADED not in capfd.readouterr().err
    assert len(lines) == 1 and "built a different cell" in lines[0]
    out = cell(*x).asnumpy()
    assert out.shape == (2, 4)
    np.testing.assert_allclose(out, x[0].asnumpy() @ cell.w.asnumpy(), atol=0.5 + 1e-5)


def test_a_failing_child_leaves_the_compilation_here(capfd):
    cell = build_noisy_dense(3)
    x = inputs()
    lines = []
    assert not compile_in_child(cell, x, build_nothing, (3,), log=lines.append)
    assert "no cell for seed 3" in capfd.readouterr().err  # the child's error stays visible
    assert len(lines) == 1 and "failed (exit code 1)" in lines[0]
    np.testing.assert_allclose(cell(*x).asnumpy(), x[0].asnumpy() @ cell.w.asnumpy(), atol=0.5 + 1e-5)


def test_a_cache_that_mindspore_does_not_load_is_reported(monkeypatch, capfd):
    """MindSpore compiles in full where the hashes of the source files differ from the child's
    (a file edited meanwhile); the cell then works, but the log must not claim the child's graph."""
    import src.utils.compile_in_child as module
    cache = module._compile_cache

    @contextmanager
    def stale_cache(folder):
        hashes = [os.path.join(root, name) for root, _, names in os.walk(folder) for name in names
                  if name.endswith(".hash")]
        assert hashes
        for path in hashes:
            with open(path, "w", encoding="utf-8") as f:
                f.write("0" * 64)
        with cache(folder):
            yield

    monkeypatch.setattr(module, "_compile_cache", stale_cache)
    cell = build_noisy_dense(3)
    x = inputs()
    lines = []
    assert not compile_in_child(cell, x, build_noisy_dense, (3,), log=lines.append)
    assert CACHE_LOADED not in capfd.readouterr().err
    assert len(lines) == 1 and "did not load the child's compiled graph" in lines[0]
    for a, b in zip(two_calls(cell, x), compiled_here(3)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("change", ["attribute", "parameter shape", "input shape", "input dtype"])
def test_the_fingerprint_changes_with_what_the_graph_depends_on(change):
    specs = input_specs(inputs())
    base = cell_fingerprint(NoisyDense(), specs)
    other, other_specs = NoisyDense(), specs
    if change == "attribute":
        other.scale = 0.25
    elif change == "parameter shape":
        other = NoisyDense(out=5)
    elif change == "input shape":
        other_specs = [((3, 8), "float32")]
    else:
        other_specs = [((2, 8), "float16")]
    assert cell_fingerprint(other, other_specs) != base


def test_the_fingerprint_ignores_parameter_values():
    """The cache holds the graph, not the weights: the caller's own weights (loaded or random)
    must not stop it from using the child's graph."""
    specs = input_specs(inputs())
    cell = NoisyDense()
    base = cell_fingerprint(cell, specs)
    cell.w.set_data(Tensor(np.ones((8, 4), np.float32)))
    assert cell_fingerprint(cell, specs) == base
    assert input_specs([Tensor(np.zeros((2, 3), np.uint8)), Tensor(np.zeros((1,), np.bool_))]) == \
        [((2, 3), "uint8"), ((1,), "bool")]
