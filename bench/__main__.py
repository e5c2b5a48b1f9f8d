"""All benchmarks in one go: ``python -m bench`` (network speed/memory, data conversion/pipeline,
evaluation post-processing, mask targets, where the train step's memory goes, gradient clipping).

Each prints its own table with the machine and the configuration of every figure, peak memory
included. Slow: the network cases compile a whole graph each; the largest, the batch-4 train step
at 768x1280, needs the most memory.
"""
import sys

from bench import bench_clip, bench_data, bench_eval, bench_mask_targets, bench_memory, bench_network


def main():
    argv = sys.argv
    sys.argv = argv[:1]
    print(f"machine: {bench_network.machine()}", flush=True)
    bench_network.main()
    bench_data.main()
    bench_eval.main()
    bench_mask_targets.main()
    bench_memory.main()
    bench_clip.main()
    sys.argv = argv


if __name__ == "__main__":
    main()
