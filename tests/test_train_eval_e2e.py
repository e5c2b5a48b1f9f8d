"""train.py, --resume, eval.py, export.py and postprogress.py end to end on toy data (CPU, tiny config)."""
import csv
import glob
import os
import re
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TINY = ["--device_target=CPU", "--img_height=128", "--img_width=160", "--resnet_block=[1,1,1,1]",
        "--backbone_norm=bn", "--freeze_at=0", "--num_classes=0", "--max_instance_count=8",
        "--rpn_proposal_nms_pre=200", "--rpn_proposal_max_num=200",
        "--rpn_nms_pre=100", "--rpn_max_num=100", "--num_expected_pos_stage2=16",
        "--num_expected_neg_stage2=48", "--num_expected_total_stage2=64", "--test_nms_pre=200",
        "--test_max_per_img=10", "--test_score_thr=0.0", "--batch_size=2", "--test_batch_size=2", "--epoch_size=1",
        "--total_epoch=1", "--warmup_step=2", "--base_lr=0.002", "--save_checkpoint_epochs=0.5", "--log_interval=1",
        "--keep_checkpoint_max=5", "--expand_ratio=0.0"]


def run(script, *args, expect_ok=True):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    out = subprocess.run([sys.executable, script, *args], cwd=ROOT, capture_output=True, text=True, env=env,
                         timeout=900)
    if expect_ok and out.returncode != 0:
        raise AssertionError(f"{script} failed ({out.returncode}):\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    return out


def history(out_dir):
    with open(os.path.join(out_dir, "loss_history.csv"), encoding="utf-8") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    base = tmp_path_factory.mktemp("e2e")
    data = base / "data"
    subprocess.run([sys.executable, "-m", "src.demo.toy_data", "--out", str(data), "--train", "8", "--val", "3",
                    "--seed", "5"], cwd=ROOT, check=True, capture_output=True)
    common = TINY + [f"--coco_root={data}", f"--mindrecord_dir={base / 'mindrecord'}"]
    run_a = base / "run_a"
    out = run("train.py", *common, f"--save_checkpoint_path={run_a}")
    return {"base": base, "data": data, "common": common, "run_a": run_a, "train_log": out.stdout,
            "train_stderr": out.stderr}


def test_training_writes_checkpoints_history_and_curve(toy):
    run_a = toy["run_a"]
    steps = [int(r["step"]) for r in history(run_a)]
    assert steps == list(range(1, len(steps) + 1)) and len(steps) >= 3
    ckpts = sorted(os.path.basename(p) for p in glob.glob(str(run_a / "ckpt_0" / "*.ckpt")))
    assert len(ckpts) >= 2 and all(re.fullmatch(r"pointrend-1_\d+\.ckpt", c) for c in ckpts)
    assert os.path.getsize(run_a / "loss_curve.png") > 1000
    assert os.path.isfile(run_a / "train_logs" / "rank_0.log")
    log = toy["train_log"]
    assert "rpn_cls" in log and "mask_point" in log and "img/s" in log and "ETA" in log


def test_a_train_step_compiled_in_a_child_process_trains_as_one_compiled_here(toy):
    """compile_in_child (the default): the step's graph comes from the child's compile cache
    (MindSpore's own warning says so), and every loss of every step equals that of a run that
    compiles the step itself: same graph, same seeds of its random sampling, same data and
    augmentation (flips included)."""
    loaded = "Use the compilation cache and execute the backend actions only"
    assert loaded in toy["train_stderr"]
    assert re.search(r"compiled in a child process in [\d.]+ s, loaded here in [\d.]+ s", toy["train_log"])
    out_dir = toy["base"] / "run_here"
    out = run("train.py", *toy["common"], f"--save_checkpoint_path={out_dir}", "--compile_in_child=False",
              "--save_checkpoint=False")
    assert loaded not in out.stderr and "child process" not in out.stdout
    child, here = history(toy["run_a"]), history(out_dir)
    assert len(child) == len(here) >= 3
    for a, b in zip(child, here):
        assert a == b


def test_memory_optimize_level_o1_trains_as_o0(toy):
    """O1 only places the graph's tensors by a compile-time plan: the same values, step by step."""
    out_dir = toy["base"] / "run_o1"
    run("train.py", *toy["common"], f"--save_checkpoint_path={out_dir}", "--memory_optimize_level=O1",
        "--save_checkpoint=False")
    o0, o1 = history(toy["run_a"]), history(out_dir)
    assert len(o0) == len(o1) >= 3
    for a, b in zip(o0, o1):
        assert a == b


def test_resume_continues_with_the_same_lr_and_step_count(toy):
    import mindspore as ms
    run_a = toy["run_a"]
    full = history(run_a)
    total = len(full)
    half = total // 2
    ckpt = run_a / "ckpt_0" / f"pointrend-1_{half}.ckpt"
    assert ckpt.is_file(), sorted(os.listdir(run_a / "ckpt_0"))
    run_b = toy["base"] / "run_b"
    out = run("train.py", *toy["common"], f"--save_checkpoint_path={run_b}", f"--resume={ckpt}")
    assert f"resumed from {ckpt} at step {half}" in out.stdout
    resumed = history(run_b)
    assert [int(r["step"]) for r in resumed] == list(range(half + 1, total + 1))
    for a, b in zip(full[half:], resumed):
        assert float(a["lr"]) == pytest.approx(float(b["lr"]), rel=1e-6)
    final_a = ms.load_checkpoint(str(run_a / "ckpt_0" / f"pointrend-1_{total}.ckpt"))
    final_b = ms.load_checkpoint(str(run_b / "ckpt_0" / f"pointrend-1_{total}.ckpt"))
    assert int(final_b["global_step"].asnumpy().reshape(-1)[0]) == total
    assert int(final_a["global_step"].asnumpy().reshape(-1)[0]) == total


def test_dynamic_loss_scale_logs_each_skipped_step(toy):
    out_dir = toy["base"] / "run_dynamic"
    # 2^127 times a gradient above 2 overflows float32: the first step is skipped, each skip halves the scale
    out = run("train.py", *toy["common"], f"--save_checkpoint_path={out_dir}", "--loss_scale_type=dynamic",
              f"--loss_scale={2.0 ** 127}", "--save_checkpoint=False")
    skipped = re.findall(r"^step (\d+): gradient overflow, update skipped; loss scale now (\S+)$", out.stdout, re.M)
    assert skipped and skipped[0][0] == "1", out.stdout[-2000:]
    assert [float(s) for _, s in skipped] == pytest.approx([2.0 ** (126 - j) for j in range(len(skipped))], rel=1e-5)


@pytest.fixture(scope="module")
def evaluated(toy):
    ckpt = sorted(glob.glob(str(toy["run_a"] / "ckpt_0" / "*.ckpt")), key=os.path.getmtime)[-1]
    eval_dir = toy["base"] / "eval_log"
    env = dict(os.environ, FOREGROUND="1", EVAL_DIR=str(eval_dir), PYTHON=sys.executable)
    out = subprocess.run(["bash", "scripts/run_eval_cpu.sh", str(toy["data"]), str(toy["base"] / "mindrecord"), ckpt,
                          *toy["common"]], cwd=ROOT, capture_output=True, text=True, env=env, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return {"dir": eval_dir, "ckpt": ckpt, "stdout": out.stdout}


def ap_line(text):
    match = re.search(r"bbox AP ([\d.]+)\s+segm AP ([\d.]+)", text)
    assert match, text[-2000:]
    return float(match.group(1)), float(match.group(2))


def test_eval_script_writes_logs_and_results(evaluated):
    d = evaluated["dir"]
    for name in ("eval.log", "results.pkl.bbox.json", "results.pkl.segm.json", "coco_summary.txt",
                 "coco_per_category_ap.csv", "boundary_ap.txt"):
        assert (d / name).is_file(), name
    log = (d / "eval.log").read_text()
    assert "Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ]" in log
    assert "GRAPH_MODE" in log and "images/s" in log
    ap_line(log)


def test_eval_bad_inputs_are_one_line_errors(toy, evaluated, tmp_path):
    import mindspore as ms
    common = toy["common"]
    out = run("eval.py", *common, f"--checkpoint_path={tmp_path / 'nope.ckpt'}", expect_ok=False)
    assert out.returncode == 2 and out.stderr.strip().splitlines()[-1].startswith("error: checkpoint not found")
    wrong = tmp_path / "wrong.ckpt"
    ms.save_checkpoint([{"name": "encoder.weight", "data": ms.Tensor(np.zeros((2, 2), np.float32))}], str(wrong))
    out = run("eval.py", *common, f"--checkpoint_path={wrong}", expect_ok=False)
    assert out.returncode == 2 and "does not fit this network" in out.stderr.strip().splitlines()[-1]
    train_ann = toy["data"] / "annotations" / "instances_train2017.json"
    out = run("eval.py", *common, f"--checkpoint_path={evaluated['ckpt']}", f"--ann_file={train_ann}",
              expect_ok=False)
    assert out.returncode == 2 and out.stderr.strip().splitlines()[-1].startswith("error:"), out.stderr[-2000:]


def test_export_matches_cell_and_postprogress_reproduces_eval(toy, evaluated):
    import mindspore as ms
    from mindspore import nn

    from src.inference import build_detector
    from src.config import load_config

    mindir_base = toy["base"] / "pointrend"
    run("export.py", *toy["common"], f"--ckpt_file={evaluated['ckpt']}", "--num_classes=6",
        f"--file_name={mindir_base}")
    mindir = str(mindir_base) + ".mindir"
    assert os.path.isfile(mindir)

    cfg = load_config([*toy["common"], "--num_classes=6"])
    net = build_detector(cfg, evaluated["ckpt"], 1, log=lambda *_: None)
    rng = np.random.default_rng(0)
    img = ms.Tensor(rng.normal(0, 1, (1, 3, 128, 160)).astype(np.float32))
    metas = ms.Tensor(np.array([[120, 160, 0.5, 0.5]], np.float32))
    expected = [x.asnumpy() for x in net(img, metas)]
    got = [x.asnumpy() for x in nn.GraphCell(ms.load(mindir))(img, metas)]
    for e, g in zip(expected, got):
        np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-5)

    raw = toy["base"] / "raw"
    out = run("postprogress.py", *toy["common"], "--stage=all", f"--mindir_path={mindir}", f"--result_path={raw}",
              "--eval_workers=1")  # results collected by a worker process
    assert ap_line(out.stdout) == pytest.approx(ap_line(evaluated["stdout"]), abs=1e-4)
    assert glob.glob(str(raw / "*_4.bin"))
