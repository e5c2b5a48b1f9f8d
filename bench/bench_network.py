"""Network speed and memory on this machine: train step and inference, GRAPH_MODE.

    python -m bench.bench_network                      # the standard table
    python -m bench.bench_network --case infer --height 768 --width 1280 --batch 1
    python -m bench.bench_network --case infer --height 800 --width 1344 --batch 1 --preset detectron2
    python -m bench.bench_network --case train --height 768 --width 1280 --batch 4 --preset default
    python -m bench.bench_network --case train --height 256 --width 256 --batch 2 --amp_level O2
    python -m bench.bench_network --case train --height 768 --width 1280 --batch 2 --preset default --conv_backward native
    python -m bench.bench_network --case train --height 256 --width 256 --batch 2 --compile_here
    python -m bench.bench_network --case train --height 256 --width 256 --batch 2 --memory_optimize_level O0

Each case runs in its own process so that its peak RSS is its own. Times are the median of
``--repeats`` calls after the first call (graph compilation, reported apart) and an untimed
warm-up of at least ``--warmup`` calls and ``--warmup-seconds`` seconds: MindSpore's CPU runtime
takes a while to settle (the first few calls after compilation are slower; every timed call is
printed so that this shows), and the settled time is what a training run or an evaluation over a
data set sees.
Inference uses test_score_thr 0 so that test_max_per_img detections go through the mask head.
The train step is compiled as train.py does by default, in a child process (``compile_in_child``),
whose peak RSS is reported apart; ``--compile_here`` compiles it in the measured process instead.
"""
import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# "default": default_config.yaml as it is (frozen BN, the model zoo's training config)
PRESETS = {"detectron2": os.path.join(ROOT, "configs", "detectron2_pointrend_r50_fpn.yaml"),
           "default": os.path.join(ROOT, "default_config.yaml")}

STANDARD_CASES = [
    ("train", 768, 1280, 2), ("train", 256, 256, 2), ("train", 128, 128, 2),
    ("infer", 768, 1280, 1), ("infer", 768, 1280, 2), ("infer", 256, 256, 1), ("infer", 256, 256, 2),
]


def machine():
    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{os.cpu_count()} cores, {cpu}"


def case_config(height, width, batch, small_test_config, preset, settings=None):
    """The config of a case: the small test config, the default one with 81 classes and batch
    statistics BN (with random weights, frozen statistics give meaningless values), or a preset's
    (frozen BN: the same values caveat, but the graph, time and memory of that config); ``settings``
    ({config key: value}, e.g. ``conv_backward``) instead of the config's values."""
    sys.path.insert(0, ROOT)
    from src.config import config_from_dict, load_config
    from src.demo.synthetic_batch import SMALL
    overrides = dict(SMALL) if small_test_config else {"device_target": "CPU", "num_classes": 81,
                                                       "backbone_norm": "bn"}
    overrides.update({"img_height": height, "img_width": width, "batch_size": batch, "test_batch_size": batch,
                      "test_score_thr": 0.0})
    overrides.update(settings or {})
    if preset:
        overrides.pop("backbone_norm")  # the preset's (frozen BN, as the converted weights)
        return load_config([f"--config_path={PRESETS[preset]}"] + [f"--{k}={v}" for k, v in overrides.items()])
    return config_from_dict(overrides)


def peak_rss_gb():
    """This process's peak resident memory so far, GB (GiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20


def children_peak_rss_gb():
    """The largest peak resident memory of this process's finished child processes, GB (GiB)."""
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2 ** 20


def checked_case_config(parser, *case_args):
    """``case_config(*case_args)``, or the parser's one-line error for a value the config rejects
    (``--conv_backward``, ``--memory_optimize_level``)."""
    try:
        return case_config(*case_args)
    except ValueError as err:  # the config's ConfigError
        parser.error(str(err))


def case_settings(args):
    """{config key: value} of the command line's config options that are set."""
    keys = ("conv_backward", "memory_optimize_level")
    return {key: getattr(args, key) for key in keys if getattr(args, key, None)}


def train_step(net, cfg, amp_level="O0"):
    """(step, inputs): ``net``'s training cell (Momentum with weight decay on conv / FC weights, the
    project's ``TrainOneStepCell``; at ``amp_level`` O1 / O2 float16 with a dynamic loss scale) and
    the synthetic training batch of ``cfg``, as Tensors in ``TRAIN_COLUMNS`` order."""
    import mindspore as ms
    from mindspore import nn

    from src.dataset.pipeline import TRAIN_COLUMNS
    from src.demo.synthetic_batch import synthetic_batch
    from src.training.mixed_precision import apply_mixed_precision
    from src.training.network_define import TrainOneStepCell, WithLossCell, split_decay_groups

    net.set_train(True)
    opt = nn.Momentum(split_decay_groups(net.trainable_params(), 1e-4, False), learning_rate=0.001, momentum=0.9)
    apply_mixed_precision(net, amp_level, "float16")
    amp = amp_level != "O0"  # float16 gradients need a loss scale; float32 steps run as before
    step = TrainOneStepCell(WithLossCell(net, cfg), opt, loss_scale=1024.0 if amp else 1.0, dynamic_scale=amp)
    step.set_train(True)
    data = synthetic_batch(cfg, seed=0)
    return step, [ms.Tensor(data[k]) for k in TRAIN_COLUMNS]


def case_network(height, width, batch, small_test_config, preset, settings):
    """(cfg, network) of a case, GRAPH_MODE on CPU with the config's memory optimize level."""
    sys.path.insert(0, ROOT)
    from src.utils.runtime import cap_onednn_isa, set_memory_optimize_level
    cap_onednn_isa()
    import mindspore as ms

    from src.maskrcnn_pointrend_r50 import MaskRcnnPointRend

    cfg = case_config(height, width, batch, small_test_config, preset, settings)
    ms.set_context(mode=ms.GRAPH_MODE)
    ms.set_device("CPU")
    set_memory_optimize_level(cfg.memory_optimize_level)
    return cfg, MaskRcnnPointRend(cfg, batch)


def train_case_step(height, width, batch, small_test_config, preset, settings, amp_level):
    """A train case's step cell, built in a fresh process: ``compile_in_child``'s builder."""
    cfg, net = case_network(height, width, batch, small_test_config, preset, settings)
    return train_step(net, cfg, amp_level)[0]


def run_case(case, height, width, batch, repeats, small_test_config, warmup=4, warmup_seconds=30.0, preset=None,
             amp_level="O0", settings=None, compile_here=False):
    cfg, net = case_network(height, width, batch, small_test_config, preset, settings)
    import mindspore as ms

    from src.demo.synthetic_batch import synthetic_batch
    from src.utils.compile_in_child import compile_in_child
    from src.utils.runtime import compile_then_release

    if case == "train":
        step, inputs = train_step(net, cfg, amp_level)
        call = lambda: step(*inputs)[0].asnumpy()  # noqa: E731
        start = time.perf_counter()
        if compile_here:
            compile_then_release(step, *inputs)
        else:  # as train.py does by default
            from_child = compile_in_child(step, inputs, train_case_step,
                                          (height, width, batch, small_test_config, preset, settings, amp_level),
                                          log=lambda line: print(line, file=sys.stderr, flush=True))
    else:
        net.set_train(False)
        data = synthetic_batch(cfg, seed=0)
        inputs = [ms.Tensor(data["img"]), ms.Tensor(data["img_metas"])]
        call = lambda: net(*inputs)[4].asnumpy()  # noqa: E731
        start = time.perf_counter()
        compile_then_release(net, *inputs)  # as eval.py and infer.py do
    call()
    first = time.perf_counter() - start
    warm_start = time.perf_counter()
    warmed = 0
    while warmed < warmup or time.perf_counter() - warm_start < warmup_seconds:
        call()
        warmed += 1
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    per = statistics.median(times)
    name = "small test" if small_test_config else f"{preset} preset" if preset else "COCO (81 classes, BN)"
    if amp_level != "O0":
        name += f", {amp_level} float16"
    for key, value in (settings or {}).items():
        name += f", {key} {value}"
    if case == "train" and compile_here:
        name += ", compiled here"
    elif case == "train" and not from_child:
        name += ", compiled here: the child's graph was not used"
    peak_gb = peak_rss_gb()
    row = {"case": case, "size": f"{height}x{width}", "batch": batch, "config": name,
           "first_call_s": round(first, 2), "warmup_calls": warmed, "repeats": repeats,
           "times_s": [round(t, 3) for t in times], "median_s": round(per, 3), "per_image_s": round(per / batch, 3),
           "peak_rss_gb": round(peak_gb, 2)}
    if case == "train" and not compile_here:
        row["compile_child_peak_rss_gb"] = round(children_peak_rss_gb(), 2)
    return row


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", choices=("train", "infer"))
    parser.add_argument("--height", type=int, default=768)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=4, help="at least this many untimed calls after the first")
    parser.add_argument("--warmup-seconds", type=float, default=30.0, help="and at least this long")
    parser.add_argument("--small", action="store_true", help="the small test config (4 classes, fewer RoIs)")
    parser.add_argument("--preset", choices=sorted(PRESETS), help="a preset config instead of the default")
    parser.add_argument("--amp_level", choices=("O0", "O1", "O2"), default="O0",
                        help="train case: mixed precision in float16 (with a dynamic loss scale)")
    parser.add_argument("--conv_backward", help="auto | native | taps: the config's conv_backward for this case "
                                                "(default: the config's, auto; the config checks the value)")
    parser.add_argument("--memory_optimize_level", help="O0 | O1: the config's memory_optimize_level for this case "
                                                        "(default: the config's, O0)")
    parser.add_argument("--compile_here", action="store_true",
                        help="train case: compile the step in this process (train.py --compile_in_child=False)")
    args = parser.parse_args()
    if args.compile_here and args.case != "train":
        parser.error("--compile_here needs --case train (inference is compiled in its own process)")
    if args.amp_level != "O0" and args.case != "train":
        parser.error("--amp_level needs --case train (inference runs in float32)")
    if args.case:
        settings = case_settings(args)
        checked_case_config(parser, args.height, args.width, args.batch, args.small, args.preset, settings)
        print(json.dumps(run_case(args.case, args.height, args.width, args.batch, args.repeats, args.small,
                                  args.warmup, args.warmup_seconds, args.preset, args.amp_level,
                                  settings, args.compile_here)))
        return
    print(f"machine: {machine()}; mindspore GRAPH_MODE on CPU; ONEDNN_MAX_CPU_ISA=AVX2; "
          f"median of {args.repeats} calls after the first call and an untimed warm-up of at least "
          f"{args.warmup} calls and {args.warmup_seconds:g} s", flush=True)
    rows = []
    cases = [c + (False, None) for c in STANDARD_CASES] + [("train", 128, 128, 2, True, None),
                                                            ("infer", 128, 128, 2, True, None)]
    cases += [("train", 800, 1344, 2, False, "detectron2"), ("infer", 800, 1344, 1, False, "detectron2")]
    cases += [("train", 768, 1280, 4, False, "default")]  # the model zoo's batch per device
    for case, h, w, b, small, preset in cases:
        cmd = [sys.executable, "-m", "bench.bench_network", "--case", case, "--height", str(h), "--width", str(w),
               "--batch", str(b), "--repeats", str(args.repeats), "--warmup", str(args.warmup),
               "--warmup-seconds", str(args.warmup_seconds)] + \
            (["--small"] if small else []) + (["--preset", preset] if preset else [])
        out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        lines = [l for l in out.stdout.splitlines() if l.startswith("{")]
        if out.returncode != 0 or not lines:
            print(f"{case} {h}x{w} b{b}: failed\n{out.stderr[-2000:]}", flush=True)
            continue
        row = json.loads(lines[-1])
        rows.append(row)
        child = row.get("compile_child_peak_rss_gb")
        child_note = "" if child is None else f" (the compiling child process: {child} GB)"
        print(f"{row['case']:5s} {row['size']:>9s} batch {row['batch']} [{row['config']}]: "
              f"{row['median_s']:.3f} s/call, {row['per_image_s']:.3f} s/image, first call {row['first_call_s']} s, "
              f"peak RSS {row['peak_rss_gb']} GB{child_note}", flush=True)
    return rows


if __name__ == "__main__":
    main()
