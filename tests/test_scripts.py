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
    ("scripts/check_gpu.sh", ["0", "1"]),
    ("scripts/check_gpu.sh", ["gpu0"]),
    ("scripts/check_gpu.sh", ["0", "--amp_level=O1"]),
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


GPU_DIST = "scripts/run_distribute_train_gpu.sh"


@pytest.mark.parametrize("env, expected", [
    ({}, "mpirun --allow-run-as-root -n 8 --output-filename log_output --merge-stderr-to-stdout "),
    ({"DEVICE_NUM": "4"}, "mpirun --allow-run-as-root -n 4 "),
    ({"LAUNCHER": "msrun"}, "msrun --worker_num=8 --local_worker_num=8 --master_addr=127.0.0.1 --master_port=8118 "
                            "--node_rank=0 --join=True "),
    ({"LAUNCHER": "msrun", "WORKER_NUM": "16", "LOCAL_WORKER_NUM": "8", "MASTER_ADDR": "10.0.0.1",
      "MASTER_PORT": "9000", "NODE_RANK": "1"},
     "msrun --worker_num=16 --local_worker_num=8 --master_addr=10.0.0.1 --master_port=9000 --node_rank=1 "),
])
def test_gpu_launchers_build_their_commands(tmp_path, env, expected):
    out = run(GPU_DIST, str(tmp_path), "mr", "--batch_size=2", DRY_RUN="1", **env)
    assert out.returncode == 0, out.stderr
    line = out.stdout.strip()
    assert line.startswith(expected), line
    assert line.endswith(f"train.py --device_target=GPU --run_distribute=True --coco_root={tmp_path} "
                         f"--mindrecord_dir={os.path.join(ROOT, 'mr')} --pre_trained= "
                         f"--save_checkpoint_path={os.path.join(ROOT, 'log_dist')} --batch_size=2"), line


@pytest.mark.parametrize("script, env", [
    (GPU_DIST, {"LAUNCHER": "slurm"}),
    (GPU_DIST, {"LAUNCHER": "msrun", "HOSTFILE": "hosts"}),  # a hostfile is mpirun's
    (GPU_DIST, {"NODE_RANK": "1"}),  # msrun settings with mpirun
    (GPU_DIST, {"LAUNCHER": "msrun", "WORKER_NUM": "4", "LOCAL_WORKER_NUM": "8"}),
    (GPU_DIST, {"DEVICE_NUM": "0"}),
    (GPU_DIST, {"DEVICE_NUM": "eight"}),
    ("scripts/run_distribute_train_cpu.sh", {"WORKER_NUM": "2", "LOCAL_WORKER_NUM": "3"}),
    ("scripts/run_distribute_train_cpu.sh", {"DEVICE_NUM": "-1"}),
])
def test_bad_launcher_settings_print_usage(tmp_path, script, env):
    out = run(script, str(tmp_path), "mr", DRY_RUN="1", **env)
    assert out.returncode == 1 and out.stderr.startswith("usage: ") and out.stderr.count("\n") == 1, out.stderr
    assert out.stdout == ""
