"""Launch scripts: argument checks give usage lines or one-line errors (nothing is started)."""
import os
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(*args, **env):
    return subprocess.run(["bash", *args], cwd=ROOT, capture_output=True, text=True, env=dict(os.environ, **env),
                          timeout=60)


@pytest.mark.parametrize("script, args", [
    ("scripts/run_standalone_train_gpu.sh", ["0", "data"]),
    ("scripts/run_distribute_train_gpu.sh", ["data"]),
    ("scripts/run_standalone_train_cpu.sh", ["data"]),
    ("scripts/run_distribute_train_cpu.sh", ["a", "b", "c", "d"]),
    ("scripts/run_eval.sh", ["0", "data", "mr"]),
    ("scripts/run_eval_cpu.sh", ["data"]),
    ("scripts/run_demo.sh", ["a", "b"]),
])
def test_wrong_argument_count_prints_usage(script, args):
    out = run(script, *args)
    assert out.returncode == 1 and out.stderr.startswith("usage: "), out.stderr
    assert out.stderr.count("\n") == 1


def test_bad_paths_and_not_mask_are_one_line_errors(tmp_path):
    out = run("scripts/run_standalone_train_gpu.sh", "0", str(tmp_path / "missing"), "mr")
    assert out.returncode == 1 and out.stderr == f"error: DATA_PATH is not a directory: {tmp_path / 'missing'}\n"
    out = run("scripts/run_standalone_train_cpu.sh", str(tmp_path), "mr", "no/such.ckpt")
    assert out.returncode == 1 and out.stderr.strip().endswith("no/such.ckpt")
    assert "PRETRAINED_PATH is not a file" in out.stderr
    out = run("scripts/run_standalone_train_gpu.sh", "0", str(tmp_path), "mr", "", "maybe")
    assert out.returncode == 1 and "NOT_MASK must be True or False" in out.stderr
    out = run("scripts/run_eval_cpu.sh", str(tmp_path), "mr", str(tmp_path / "none.ckpt"))
    assert out.returncode == 1 and "CHECKPOINT_PATH is not a file" in out.stderr


def test_not_mask_true_is_refused_by_train_py(tmp_path):
    env = {"FOREGROUND": "1", "LOG_DIR": str(tmp_path / "log")}
    out = run("scripts/run_standalone_train_cpu.sh", str(tmp_path), str(tmp_path / "mr"), "--not_mask=True", **env)
    assert out.returncode == 2, out.stdout + out.stderr
    assert "error: config key 'not_mask'" in out.stdout + out.stderr
