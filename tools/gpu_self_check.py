"""Five-minute self-check of a GPU machine before a long run (``bash scripts/check_gpu.sh``).

    python tools/gpu_self_check.py --out DIR [--device_target GPU|CPU]

First the environment: MindSpore version, the GPU (name, driver, compute capability), the CUDA
runtime and cuDNN libraries found, each compared with what MindSpore 2.10's GPU plugins were built
for (warnings, before any work). Without a GPU it stops at once (exit 2), unless
``--device_target CPU``, which runs the same stages on the CPU. Then, on generated toy data and a
tiny config: MindRecord conversion, 20 training steps in float32 and 20 in mixed precision (O1,
float16, dynamic loss scale; losses finite and falling), evaluation (COCO AP), MINDIR export, and
the exported graph run over the same images (the same detections as the evaluation). Ends with one
PASS / FAIL / SKIP line per stage, the logs under DIR/logs and the report in DIR/report.txt.
Exit status 0 when every stage passed, 1 otherwise.
"""
import argparse
import csv
import glob
import json
import math
import os
import re
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# What MindSpore 2.10's wheel declares (mindspore/run_check/_check_version.py, and the libraries and
# GPU architectures named in lib/plugin/libmindspore_gpu.so.11.1 / .so.11.6).
CUDA_VERSIONS = ("11.1", "11.6")
CUDNN_MAJOR = 8
BUILT_ARCHS = (6.0, 6.1, 7.0, 7.5, 8.0)  # sm_xx in the CUDA 11.6 plugin; 8.x runs sm_80 code
MIN_DRIVER = {"11.1": (455, 23), "11.6": (510, 39)}  # NVIDIA's minimum driver per CUDA toolkit (Linux)

STEPS = 20
# tiny network and data: the stages check the machinery, not accuracy
TINY = ["--img_height=128", "--img_width=160", "--resnet_block=[1,1,1,1]", "--backbone_norm=gn", "--freeze_at=0",
        "--num_classes=0", "--max_instance_count=8", "--rpn_proposal_nms_pre=200",
        "--rpn_proposal_max_num=200", "--rpn_nms_pre=100", "--rpn_max_num=100", "--num_expected_pos_stage2=16",
        "--num_expected_neg_stage2=48", "--num_expected_total_stage2=64", "--test_nms_pre=200",
        "--test_max_per_img=10", "--test_score_thr=0.0", "--batch_size=2", "--test_batch_size=2",
        "--base_lr=0.01", "--warmup_step=5", "--warmup_ratio=0.1", "--grad_clip_norm=5.0", "--log_interval=5",
        "--expand_ratio=0.0", "--flip_ratio=0.0", "--keep_checkpoint_max=1"]
TRAIN_IMAGES, VAL_IMAGES = 8, 4  # 4 steps per epoch at batch 2: 5 epochs are STEPS steps


class Report:
    """Stage results, printed as they come and written to DIR/report.txt at the end."""

    def __init__(self, out_dir):
        self.out_dir = out_dir
        self.lines = []
        self.results = {}

    def info(self, text):
        print(text, flush=True)
        self.lines.append(text)

    def stage(self, name, status, detail):
        self.results[name] = status
        self.info(f"{status:4s}  {name:12s} {detail}")

    def write(self):
        from src.utils.atomic_io import atomic_open
        with atomic_open(os.path.join(self.out_dir, "report.txt")) as f:
            f.write("\n".join(self.lines) + "\n")


def _run(cmd, log_path, env=None):
    """Run ``cmd`` in the repository with output to ``log_path``; (ok, seconds)."""
    start = time.time()
    with open(log_path, "w", encoding="utf-8") as log:
        proc = subprocess.run(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, text=True,
                              env=dict(os.environ, PYTHONUNBUFFERED="1", **(env or {})))
    return proc.returncode == 0, time.time() - start


def _last_error(log_path):
    """The last non-empty line of a log (what to read first when a stage failed)."""
    try:
        with open(log_path, encoding="utf-8", errors="replace") as f:
            lines = [line.strip() for line in f if line.strip()]
    except OSError:
        return "no log"
    return lines[-1][:200] if lines else "empty log"


# ---------------------------------------------------------------- environment

def _version_tuple(text):
    return tuple(int(x) for x in re.findall(r"\d+", text)[:2])


def gpu_info():
    """[(name, driver, compute capability)] from nvidia-smi, or None when there is no usable GPU."""
    if shutil.which("nvidia-smi") is None:
        return None
    out = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,compute_cap", "--format=csv,noheader"],
                         capture_output=True, text=True)
    if out.returncode != 0:
        return None
    gpus = [tuple(part.strip() for part in line.split(",")) for line in out.stdout.splitlines() if line.strip()]
    return gpus or None


def library_versions(name):
    """Versions of a shared library found by the loader (``ldconfig -p``) and in LD_LIBRARY_PATH,
    from the file names: libcudart.so.11.6.55 -> "11.6.55"."""
    found = set()
    dirs = [d for d in os.environ.get("LD_LIBRARY_PATH", "").split(":") if d]
    dirs += ["/usr/local/cuda/lib64", "/usr/lib/x86_64-linux-gnu"]
    for d in dirs:
        for path in glob.glob(os.path.join(d, f"{name}.so.*")):
            found.add(os.path.realpath(path))
    if shutil.which("ldconfig"):
        out = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True)
        for line in out.stdout.splitlines():
            if f"{name}.so" in line and "=>" in line:
                found.add(os.path.realpath(line.split("=>")[1].strip()))
    versions = set()
    for path in found:
        match = re.search(rf"{name}\.so\.([\d.]+)$", path)
        if match:
            versions.add(match.group(1))
    return sorted(versions)


def environment_warnings(gpus, cudart, cudnn):
    """Warnings on what does not fit MindSpore 2.10's GPU build (the checks are version rules)."""
    warnings = []
    if not any(v.startswith(c) for v in cudart for c in CUDA_VERSIONS):
        warnings.append(f"CUDA runtime {', '.join(cudart) or 'not found'}: MindSpore 2.10's GPU plugins need "
                        f"CUDA {' or '.join(CUDA_VERSIONS)} (libcudart.so.11.0) on LD_LIBRARY_PATH")
    if not any(v.split(".")[0] == str(CUDNN_MAJOR) for v in cudnn):
        warnings.append(f"cuDNN {', '.join(cudnn) or 'not found'}: MindSpore 2.10 needs cuDNN {CUDNN_MAJOR} "
                        "(8.0.x with CUDA 11.1, 8.5.x with CUDA 11.6)")
    for name, driver, cap in gpus:
        try:
            capability = float(cap)
        except ValueError:
            warnings.append(f"{name}: compute capability unknown ({cap!r})")
            continue
        if capability < BUILT_ARCHS[0]:
            warnings.append(f"{name}: compute capability {cap} is older than MindSpore 2.10's oldest target "
                            f"({BUILT_ARCHS[0]})")
        elif math.floor(capability) > math.floor(BUILT_ARCHS[-1]):
            warnings.append(f"{name}: compute capability {cap} is newer than what MindSpore 2.10's CUDA 11.x "
                            f"build carries code for (up to {BUILT_ARCHS[-1]}); kernels must be JIT-compiled "
                            "from PTX if the plugin has it, and may fail to load")
        for cuda, minimum in MIN_DRIVER.items():
            if any(v.startswith(cuda) for v in cudart) and _version_tuple(driver) < minimum:
                warnings.append(f"{name}: driver {driver} is older than CUDA {cuda} needs "
                                f"({minimum[0]}.{minimum[1]})")
    return warnings


def check_environment(report, device_target):
    """Print versions and warnings; False when a GPU is needed and there is none."""
    import platform
    report.info(f"python {platform.python_version()}, {platform.platform()}")
    try:
        from importlib.metadata import version
        report.info(f"mindspore {version('mindspore')}")
    except Exception as e:  # noqa: BLE001 - reported, and the stages will fail on it
        report.info(f"mindspore: not importable ({e})")
    gpus = gpu_info()
    if device_target == "CPU":
        report.info("device_target CPU: the GPU checks are skipped; the stages run on the CPU")
        return True
    if not gpus:
        report.info("error: no NVIDIA GPU found (nvidia-smi missing or failing): this self-check is for GPU "
                    "machines; DEVICE_TARGET=CPU runs its stages on the CPU")
        return False
    cudart, cudnn = library_versions("libcudart"), library_versions("libcudnn")
    for name, driver, cap in gpus:
        report.info(f"GPU {name}, driver {driver}, compute capability {cap}")
    report.info(f"CUDA runtime {', '.join(cudart) or 'not found'}; cuDNN {', '.join(cudnn) or 'not found'}; "
                f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', '(unset)')}")
    for warning in environment_warnings(gpus, cudart, cudnn):
        report.info(f"warning: {warning}")
    return True


# ---------------------------------------------------------------- stages

def loss_trend(history_csv):
    """(steps, first, last, finite) of the total loss: means of the first and last five finite
    steps (steps skipped for a gradient overflow still log their loss)."""
    with open(history_csv, encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    losses = [float(r["loss"]) for r in rows]
    finite = [v for v in losses if math.isfinite(v)]
    if len(finite) < 10:
        return len(rows), float("nan"), float("nan"), False
    return len(rows), sum(finite[:5]) / 5, sum(finite[-5:]) / 5, len(finite) == len(losses)


def ap_of(log_path):
    """(bbox AP, segm AP) from an evaluation log, or None."""
    with open(log_path, encoding="utf-8", errors="replace") as f:
        match = re.search(r"bbox AP ([\d.]+)\s+segm AP ([\d.]+)", f.read())
    return (float(match.group(1)), float(match.group(2))) if match else None


def detection_differences(json_a, json_b):
    """(count a, count b, largest box coordinate difference in px, largest score difference) of two
    COCO bbox result files, detections paired in (image, score) order."""
    def load(path):
        with open(path, encoding="utf-8") as f:
            return sorted(json.load(f), key=lambda d: (d["image_id"], -d["score"], d["category_id"]))
    a, b = load(json_a), load(json_b)
    if len(a) != len(b) or not a:
        return len(a), len(b), float("inf"), float("inf")
    if any(x["image_id"] != y["image_id"] or x["category_id"] != y["category_id"] for x, y in zip(a, b)):
        return len(a), len(b), float("inf"), float("inf")
    box = max(abs(u - v) for x, y in zip(a, b) for u, v in zip(x["bbox"], y["bbox"]))
    score = max(abs(x["score"] - y["score"]) for x, y in zip(a, b))
    return len(a), len(b), box, score


def run_stages(report, out_dir, device_target):
    py = sys.executable
    logs = os.path.join(out_dir, "logs")
    os.makedirs(logs, exist_ok=True)
    data, mindrecord = os.path.join(out_dir, "data"), os.path.join(out_dir, "mindrecord")
    common = [f"--device_target={device_target}", f"--coco_root={data}", f"--mindrecord_dir={mindrecord}"] + TINY
    epochs = STEPS // (TRAIN_IMAGES // 2)
    schedule = [f"--epoch_size={epochs}", f"--total_epoch={epochs}", "--save_checkpoint_epochs=100"]

    def log(name):
        return os.path.join(logs, f"{name}.log")

    def failed(name, seconds):
        report.stage(name, "FAIL", f"({seconds:.0f} s) {_last_error(log(name))}  [log: {log(name)}]")

    def simple_stage(name, cmd, detail):
        ok, sec = _run(cmd, log(name))
        if ok:
            report.stage(name, "PASS", f"({sec:.0f} s) {detail}")
        else:
            failed(name, sec)
        return ok

    if not simple_stage("data", [py, "-m", "src.demo.toy_data", "--out", data, "--train", str(TRAIN_IMAGES),
                                 "--val", str(VAL_IMAGES), "--seed", "1"], f"toy data in {data}"):
        return
    if not simple_stage("convert", [py, "train.py", *common, "--only_create_dataset=True",
                                    f"--save_checkpoint_path={os.path.join(out_dir, 'convert')}"],
                        f"MindRecord in {mindrecord}"):
        return

    runs = {"train_fp32": [], "train_amp": ["--amp_level=O1", "--amp_dtype=float16", "--loss_scale_type=dynamic",
                                            f"--loss_scale={2.0 ** 16}"]}
    for name, extra in runs.items():
        run_dir = os.path.join(out_dir, name)
        ok, sec = _run([py, "train.py", *common, *schedule, *extra, f"--save_checkpoint_path={run_dir}"], log(name))
        if not ok:
            failed(name, sec)
            continue
        steps, first, last, all_finite = loss_trend(os.path.join(run_dir, "loss_history.csv"))
        with open(log(name), encoding="utf-8", errors="replace") as f:
            skipped = len(re.findall(r"gradient overflow, update skipped", f.read()))
        detail = (f"({sec:.0f} s) {steps} steps, loss {first:.3f} -> {last:.3f} (means of the first and last "
                  f"five)" + (f", {skipped} steps skipped for overflow" if extra else ""))
        good = steps == STEPS and all_finite and last < first
        report.stage(name, "PASS" if good else "FAIL", detail + ("" if good else f"  [log: {log(name)}]"))

    ckpts = sorted(glob.glob(os.path.join(out_dir, "train_fp32", "ckpt_0", "*.ckpt")), key=os.path.getmtime)
    if report.results.get("train_fp32") != "PASS" or not ckpts:
        for name in ("eval", "export", "mindir"):
            report.stage(name, "SKIP", "needs the train_fp32 checkpoint")
        return
    eval_dir = os.path.join(out_dir, "eval")
    ok, sec = _run([py, "eval.py", *common, f"--checkpoint_path={ckpts[-1]}", f"--eval_output_dir={eval_dir}"],
                   log("eval"))
    eval_ap = ap_of(log("eval")) if ok else None
    if eval_ap:
        report.stage("eval", "PASS", f"({sec:.0f} s) bbox AP {eval_ap[0]:.4f}  segm AP {eval_ap[1]:.4f} (a tiny "
                                     f"model after {STEPS} steps: near zero is expected)")
    else:
        failed("eval", sec)
    mindir_base = os.path.join(out_dir, "pointrend")
    from src.demo.toy_data import CATEGORIES
    # export.py has no data set to read the number of classes from
    ok, sec = _run([py, "export.py", *common, f"--ckpt_file={ckpts[-1]}", f"--num_classes={len(CATEGORIES) + 1}",
                    f"--file_name={mindir_base}"], log("export"))
    ok = ok and os.path.isfile(mindir_base + ".mindir")
    if not ok:
        failed("export", sec)
        report.stage("mindir", "SKIP", "needs the exported MINDIR")
        return
    report.stage("export", "PASS", f"({sec:.0f} s) {mindir_base}.mindir")
    raw = os.path.join(out_dir, "mindir_raw")
    ok, sec = _run([py, "postprogress.py", *common, "--stage=all", f"--mindir_path={mindir_base}.mindir",
                    f"--result_path={raw}"], log("mindir"))
    mindir_ap = ap_of(log("mindir")) if ok else None
    if not mindir_ap:
        failed("mindir", sec)
        return
    detail = f"({sec:.0f} s) bbox AP {mindir_ap[0]:.4f}  segm AP {mindir_ap[1]:.4f}"
    if not eval_ap:
        report.stage("mindir", "PASS", detail + " (no evaluation to compare with)")
        return
    n_eval, n_mindir, box, score = detection_differences(os.path.join(eval_dir, "results.pkl.bbox.json"),
                                                         os.path.join(raw, "results.pkl.bbox.json"))
    good = n_eval == n_mindir > 0 and box <= 0.5 and score <= 1e-3
    report.stage("mindir", "PASS" if good else "FAIL",
                 f"{detail}; {n_mindir} detections vs the evaluation's {n_eval}, boxes within {box:.2g} px, scores "
                 f"within {score:.2g}" + ("" if good else f" (allowed: same detections, 0.5 px, 1e-3)  "
                                                         f"[log: {log('mindir')}]"))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="folder for the toy data, logs and report")
    parser.add_argument("--device_target", default="GPU", choices=("GPU", "CPU"))
    args = parser.parse_args()
    sys.path.insert(0, ROOT)
    out_dir = os.path.abspath(args.out)
    os.makedirs(out_dir, exist_ok=True)
    report = Report(out_dir)
    start = time.time()
    if not check_environment(report, args.device_target):
        report.write()
        sys.exit(2)
    run_stages(report, out_dir, args.device_target)
    failed = [n for n, s in report.results.items() if s != "PASS"]
    report.info(f"self-check finished in {time.time() - start:.0f} s: "
                + (f"{len(failed)} stage(s) not passed ({', '.join(failed)}); send {out_dir}/report.txt and "
                   f"{out_dir}/logs/ with your issue" if failed else "all stages PASS"))
    report.write()
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
