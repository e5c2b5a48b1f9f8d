"""The demo script and CPU data-parallel training through the launch scripts, at a tiny size."""
import glob
import os
import re
import subprocess
import sys

import cv2
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SMALL_NET = ["--img_height=128", "--img_width=160", "--resnet_block=[1,1,1,1]", "--max_instance_count=8",
             "--rpn_proposal_nms_pre=200", "--rpn_proposal_max_num=200",
             "--rpn_nms_pre=100", "--rpn_max_num=100",
             "--num_expected_pos_stage2=16", "--num_expected_neg_stage2=48", "--num_expected_total_stage2=64",
             "--test_nms_pre=200", "--test_max_per_img=10", "--epoch_size=1", "--total_epoch=1", "--log_interval=1"]


def run_script(args, env_extra, timeout=900):
    env = dict(os.environ, PYTHON=sys.executable, FOREGROUND="1", PYTHONUNBUFFERED="1", **env_extra)
    out = subprocess.run(["bash", *args], cwd=ROOT, capture_output=True, text=True, env=env, timeout=timeout)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    return out.stdout


def test_demo_produces_every_output(tmp_path):
    out_dir = tmp_path / "demo"
    stdout = run_script(["scripts/run_demo.sh", str(out_dir), *SMALL_NET, "--warmup_step=1"],
                        {"TRAIN_IMAGES": "4", "VAL_IMAGES": "2"})
    for path in ("data/annotations/instances_train2017.json", "data/annotations/instances_val2017.json",
                 "mindrecord/classes.json", "train/loss_curve.png", "train/loss_history.csv", "eval_log/eval.log",
                 "eval_log/coco_per_category_ap.csv", "eval_log/results.pkl.segm.json", "eval_log/boundary_ap.txt"):
        assert (out_dir / path).is_file(), path
    assert glob.glob(str(out_dir / "train" / "ckpt_0" / "*.ckpt"))
    assert len(glob.glob(str(out_dir / "overlays" / "0*.png"))) == 2
    overview = cv2.imread(str(out_dir / "overlays" / "overview.png"))
    first = cv2.imread(sorted(glob.glob(str(out_dir / "overlays" / "0*.png")))[0])
    assert overview.shape[0] > first.shape[0] and (overview[:first.shape[0], :first.shape[1]] == first).all()
    assert "segm AP" in stdout and "Boundary AP" in stdout and "overlays:" in stdout
    assert re.search(r"demo finished in \d+ min \d+ s \(toy data \d+ s, conversion \+ training \d+ s, "
                     r"evaluation \d+ s, overlays \d+ s\)", stdout), stdout[-1000:]


def test_cpu_data_parallel_replicas_stay_identical(tmp_path):
    import mindspore as ms
    data = tmp_path / "data"
    subprocess.run([sys.executable, "-m", "src.demo.toy_data", "--out", str(data), "--train", "8", "--val", "1",
                    "--seed", "3"], cwd=ROOT, check=True, capture_output=True)
    log_dir = tmp_path / "dist"
    run_script(["scripts/run_distribute_train_cpu.sh", str(data), str(tmp_path / "mr"), *SMALL_NET,
                "--backbone_norm=gn", "--freeze_at=0", "--num_classes=0", "--batch_size=2", "--base_lr=0.01",
                "--warmup_step=1", "--save_checkpoint_all_ranks=True", "--save_checkpoint_epochs=1.0"],
               {"DEVICE_NUM": "2", "LOG_DIR": str(log_dir), "MASTER_PORT": "8231"})
    logs = [(log_dir / "train_logs" / f"rank_{r}.log").read_text() for r in (0, 1)]
    for log in logs:
        assert "training 2 steps (1 epochs x 2 steps, batch 2 x 2 devices)" in log, log[-2000:]
    ckpts = [glob.glob(str(log_dir / f"ckpt_{r}" / "*.ckpt")) for r in (0, 1)]
    assert all(len(c) == 1 for c in ckpts), ckpts
    params = [ms.load_checkpoint(c[0]) for c in ckpts]
    names = [n for n in params[0] if not n.startswith(("moments.", "learning_rate", "global_step", "momentum"))]
    assert len(names) > 100
    for name in names:  # data-parallel replicas: every weight identical after the all-reduced updates
        np.testing.assert_array_equal(params[0][name].asnumpy(), params[1][name].asnumpy(), err_msg=name)
    # and the ranks did see different batches: their first losses differ
    first = [next(l for l in log.splitlines() if l.startswith("step 1/")) for log in logs]
    assert first[0] != first[1], first
