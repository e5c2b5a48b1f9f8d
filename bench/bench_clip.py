"""Gradient clipping by global norm: this project's ``clip_by_global_norm`` against
``mindspore.ops.clip_by_global_norm``, on random gradients shaped like each config's parameters.

    python -m bench.bench_clip [--configs configs/demo_cpu.yaml default_config.yaml] [--repeats 10]

Prints the median time of each (GRAPH_MODE, after one warm-up call) and the largest difference
between their outputs.
"""
import argparse
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", nargs="+", default=["configs/demo_cpu.yaml", "default_config.yaml"])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--clip_norm", type=float, default=5.0)
    args = parser.parse_args()
    sys.path.insert(0, ROOT)
    from src.utils.runtime import cap_onednn_isa
    cap_onednn_isa()
    import numpy as np
    import mindspore as ms
    from mindspore import nn, ops
    from src.config import load_config
    from src.maskrcnn_pointrend_r50 import MaskRcnnPointRend
    from src.training.network_define import clip_by_global_norm
    ms.set_context(mode=ms.GRAPH_MODE)
    ms.set_device("CPU")

    class Clip(nn.Cell):
        def __init__(self, fn, clip_norm):
            super().__init__()
            self.fn = fn
            self.clip_norm = clip_norm

        def construct(self, grads):
            return self.fn(grads, self.clip_norm)

    print(f"gradient clipping by global norm (median of {args.repeats} calls, CPU)")
    for path in args.configs:
        cfg = load_config([f"--config_path={os.path.join(ROOT, path)}", "--num_classes=81"])
        shapes = [p.shape for p in MaskRcnnPointRend(cfg, cfg.batch_size).trainable_params()]
        rng = np.random.default_rng(0)
        grads = tuple(ms.Tensor(rng.standard_normal(s).astype(np.float32)) for s in shapes)
        outputs, times = [], []
        for fn in (ops.clip_by_global_norm, clip_by_global_norm):
            cell = Clip(fn, args.clip_norm)
            cell(grads)
            ts = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                out = cell(grads)
                out[-1].asnumpy()
                ts.append(time.perf_counter() - start)
            outputs.append([o.asnumpy() for o in out])
            times.append(statistics.median(ts))
        diff = max(float(np.abs(a - b).max()) for a, b in zip(*outputs))
        print(f"{path}: {len(shapes)} tensors, {sum(int(np.prod(s)) for s in shapes):,} values: "
              f"mindspore.ops {times[0] * 1e3:.1f} ms, ours {times[1] * 1e3:.1f} ms "
              f"({times[0] / times[1]:.1f}x), largest difference {diff:.2e}", flush=True)


if __name__ == "__main__":
    main()
