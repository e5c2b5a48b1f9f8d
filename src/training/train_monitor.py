"""What the training loop reports and keeps: log lines, loss history, NaN guard, checkpoints."""
import csv
import glob
import os
import time

import mindspore as ms

from src.utils.errors import UserError

from src.utils.atomic_io import atomic_open
from src.training.loss_curve import write_loss_curve
from src.utils.progress import format_duration


class TrainingError(UserError, RuntimeError):
    """Training cannot go on (one-line message)."""


class RankLogger:
    """Writes every line to this rank's log file; rank 0 also prints it."""

    def __init__(self, log_dir, rank):
        os.makedirs(log_dir, exist_ok=True)
        self.rank = rank
        self.path = os.path.join(log_dir, f"rank_{rank}.log")
        self.file = open(self.path, "a", encoding="utf-8")

    def __call__(self, line):
        self.file.write(line + "\n")
        self.file.flush()
        if self.rank == 0:
            print(line, flush=True)

    def close(self):
        self.file.close()


class StepMonitor:
    """Per-step bookkeeping: log every ``log_interval`` steps with the losses averaged since the last
    line, LR, speed and ETA; stop after ``max_nan_steps`` non-finite losses in a row.

    The run's first step (graph compilation included) gets a line of its own and is left out of the
    speed; the next line comes ``EARLY_STEPS`` steps later, so that the step rate and ETA show at once
    however long ``log_interval`` is.

    Args:
        loss_names: names of the loss components; total_steps: last global step;
        images_per_step: global batch; log: a ``RankLogger``.
    """

    EARLY_STEPS = 5

    def __init__(self, loss_names, total_steps, images_per_step, log_interval, max_nan_steps, log):
        self.loss_names = ("loss",) + tuple(loss_names)
        self.total_steps = total_steps
        self.images_per_step = images_per_step
        self.log_interval = max(1, log_interval)
        self.max_nan_steps = max_nan_steps
        self.log = log
        self.nan_run = 0
        self.history = []  # (step, lr, values...)
        self._run_steps = 0  # steps of this process (a resumed run starts past 1)
        self._window_start = time.perf_counter()
        self._window_steps = 0
        self._window_sums = [0.0] * len(self.loss_names)
        self._window_finite = 0

    def step(self, global_step, lr, values):
        """Record the losses of 1-based ``global_step``; raises TrainingError on too many NaNs.

        Returns True when the step's loss was finite (a checkpoint may be written).
        """
        self.history.append((global_step, lr) + tuple(values))
        self._window_steps += 1
        self._run_steps += 1
        bad = [n for n, v in zip(self.loss_names, values) if not (v == v and abs(v) != float("inf"))]
        if bad:
            self.nan_run += 1
            self.log(f"step {global_step}: non-finite loss in {', '.join(bad)} (step skipped, "
                     f"{self.nan_run} in a row)")
            if self.nan_run >= self.max_nan_steps:
                raise TrainingError(f"{self.nan_run} non-finite losses in a row (last at step {global_step}, "
                                    f"components {', '.join(bad)}); stopping without saving. Lower base_lr, "
                                    "set grad_clip_norm, or check the data")
            return False
        self.nan_run = 0
        self._window_sums = [a + v for a, v in zip(self._window_sums, values)]
        self._window_finite += 1
        first, last = self._run_steps == 1, global_step == self.total_steps
        if first or last or global_step % self.log_interval == 0 or self._run_steps == 1 + self.EARLY_STEPS:
            elapsed = time.perf_counter() - self._window_start
            step_time = elapsed / self._window_steps
            # losses averaged over the finite steps since the last line: single steps are noisy
            parts = " ".join(f"{n} {v / self._window_finite:.4f}" for n, v in zip(self.loss_names, self._window_sums))
            head = f"step {global_step}/{self.total_steps} {parts} lr {lr:.6f}"
            if first and not last:
                self.log(f"{head} first step {step_time:.1f}s (graph compilation included; speed and ETA "
                         f"from the next {self.EARLY_STEPS} steps)")
            else:
                left = (self.total_steps - global_step) * step_time
                self.log(f"{head} step_time {step_time:.3f}s {self.images_per_step / step_time:.2f} img/s "
                         f"ETA {format_duration(left)}")
            self._window_start = time.perf_counter()
            self._window_steps = 0
            self._window_sums = [0.0] * len(self.loss_names)
            self._window_finite = 0
        return True

    def write_history(self, out_dir):
        """Loss history as CSV and a PNG curve (atomic writes)."""
        with atomic_open(os.path.join(out_dir, "loss_history.csv")) as f:
            writer = csv.writer(f)
            writer.writerow(("step", "lr") + self.loss_names)
            writer.writerows(self.history)
        steps = [h[0] for h in self.history]
        series = {name: [h[2 + i] for h in self.history] for i, name in enumerate(self.loss_names)}
        write_loss_curve(os.path.join(out_dir, "loss_curve.png"), steps, series)


class CheckpointSaver:
    """Rank 0 writes ``{prefix}-{epoch}_{step}.ckpt`` (MindSpore writes a temp file and renames it)
    and keeps the newest ``keep_max``."""

    def __init__(self, directory, prefix, keep_max):
        self.directory = directory
        self.prefix = prefix
        self.keep_max = keep_max
        os.makedirs(directory, exist_ok=True)

    def save(self, train_cell, epoch, step_in_epoch):
        path = os.path.join(self.directory, f"{self.prefix}-{epoch}_{step_in_epoch}.ckpt")
        ms.save_checkpoint(train_cell, path)
        saved = sorted(glob.glob(os.path.join(self.directory, f"{self.prefix}-*.ckpt")), key=os.path.getmtime)
        for old in saved[:-self.keep_max] if self.keep_max > 0 else []:
            os.remove(old)
        return path
