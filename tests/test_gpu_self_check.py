"""scripts/check_gpu.sh / tools/gpu_self_check.py: the environment rules, the stop without a GPU,
and (slow) every stage end to end on the CPU."""
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))

import gpu_self_check  # noqa: E402


def test_environment_rules_flag_what_mindspore_2_10_was_not_built_for():
    good = gpu_self_check.environment_warnings([("A100", "515.65.01", "8.0")], ["11.6.55"], ["8.5.0"])
    assert good == []
    # Ampere consumer cards run the sm_80 code
    assert gpu_self_check.environment_warnings([("RTX 3090", "515.65.01", "8.6")], ["11.6.55"], ["8.5.0"]) == []
    text = " | ".join(gpu_self_check.environment_warnings([("H100", "470.82.01", "9.0")], ["12.2.140"], ["9.1.0"]))
    assert "CUDA runtime 12.2.140" in text and "cuDNN 9.1.0" in text and "compute capability 9.0 is newer" in text
    old = gpu_self_check.environment_warnings([("K80", "470.82.01", "3.7")], ["11.6.55"], ["8.5.0"])
    assert any("3.7 is older" in w for w in old) and any("driver 470.82.01 is older than CUDA 11.6" in w for w in old)
    assert gpu_self_check.environment_warnings([("V100", "460.32.03", "7.0")], ["11.1.74"], ["8.0.5"]) == []


def test_loss_trend_reads_the_history(tmp_path):
    path = tmp_path / "loss_history.csv"
    rows = ["step,lr,loss,a"] + [f"{i},0.01,{3.0 - 0.1 * i},{1.0}" for i in range(1, 21)]
    path.write_text("\n".join(rows) + "\n")
    steps, first, last, finite = gpu_self_check.loss_trend(str(path))
    assert steps == 20 and finite and first == pytest.approx(2.7) and last == pytest.approx(1.2)
    path.write_text("\n".join(rows[:5] + ["5,0.01,nan,1.0"] + rows[6:]) + "\n")
    assert gpu_self_check.loss_trend(str(path))[3] is False


def test_without_a_gpu_it_stops_at_once(tmp_path):
    # an empty PATH entry first hides any nvidia-smi of this machine behind a failing one
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "nvidia-smi").write_text("#!/bin/sh\necho 'NVIDIA-SMI has failed' >&2\nexit 9\n")
    (fake / "nvidia-smi").chmod(0o755)
    env = dict(os.environ, PATH=f"{fake}:{os.environ['PATH']}", OUT_DIR=str(tmp_path / "out"),
               PYTHON=sys.executable)
    out = subprocess.run(["bash", "scripts/check_gpu.sh"], cwd=ROOT, capture_output=True, text=True, env=env,
                         timeout=120)
    assert out.returncode == 2, out.stdout + out.stderr
    assert "error: no NVIDIA GPU found" in out.stdout and "DEVICE_TARGET=CPU" in out.stdout
    assert not (tmp_path / "out" / "data").exists()  # no stage ran
    assert "no NVIDIA GPU found" in (tmp_path / "out" / "report.txt").read_text()


@pytest.mark.slow
def test_every_stage_passes_on_the_cpu(tmp_path):
    env = dict(os.environ, DEVICE_TARGET="CPU", OUT_DIR=str(tmp_path / "out"), PYTHON=sys.executable)
    out = subprocess.run(["bash", "scripts/check_gpu.sh"], cwd=ROOT, capture_output=True, text=True, env=env,
                         timeout=1800)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    for stage in ("data", "convert", "train_fp32", "train_amp", "eval", "export", "mindir"):
        assert any(line.startswith(f"PASS  {stage} ") for line in out.stdout.splitlines()), (stage, out.stdout)
    assert "all stages PASS" in (tmp_path / "out" / "report.txt").read_text()


def test_detection_differences_pairs_detections(tmp_path):
    import json
    dets = [{"image_id": 1, "category_id": 2, "bbox": [1.0, 2.0, 3.0, 4.0], "score": 0.9},
            {"image_id": 1, "category_id": 5, "bbox": [5.0, 5.0, 2.0, 2.0], "score": 0.4}]
    moved = [dict(d, bbox=[v + 0.25 for v in d["bbox"]], score=d["score"] - 1e-4) for d in dets[::-1]]
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(dets))
    b.write_text(json.dumps(moved))
    n_a, n_b, box, score = gpu_self_check.detection_differences(str(a), str(b))
    assert (n_a, n_b) == (2, 2) and box == pytest.approx(0.25) and score == pytest.approx(1e-4)
    b.write_text(json.dumps([dict(dets[0], category_id=9), dets[1]]))
    assert gpu_self_check.detection_differences(str(a), str(b))[2] == float("inf")
    b.write_text(json.dumps(dets[:1]))
    assert gpu_self_check.detection_differences(str(a), str(b))[:2] == (2, 1)
