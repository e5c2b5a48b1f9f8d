"""Progress reporting for long loops: count, rate and ETA, printed every few seconds.

Usage::

    progress = Progress(len(items), "convert train", unit="images")
    for item in items:
        ...
        progress.update()
    progress.close()
"""
import sys
import time


def format_duration(seconds):
    """``3725.2`` -> ``'1:02:05'`` (h:mm:ss; minutes:seconds below one hour)."""
    seconds = int(round(max(seconds, 0.0)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}:{minutes:02d}:{secs:02d}"
    return f"{minutes}:{secs:02d}"


class Progress:
    """Counts finished units and prints ``desc: done/total (pct) rate unit/s, ETA`` lines.

    Args:
        total: expected number of units, or None when unknown (no percentage or ETA then).
        desc: label printed at the start of every line.
        unit: name of one unit in the rate ("images", "steps", ...).
        interval: seconds between two printed lines (the first comes after ``interval`` too, so
            short loops print only the final summary).
        stream: where lines go (default: stdout, looked up at print time so tests can capture it).
    """

    def __init__(self, total, desc, unit="images", interval=5.0, stream=None):
        self.total = total
        self.desc = desc
        self.unit = unit
        self.interval = interval
        self.stream = stream
        self.done = 0
        self.start = time.perf_counter()
        self._last_print = self.start
        self._closed = False

    def rate(self):
        """Units per second since the start."""
        elapsed = time.perf_counter() - self.start
        return self.done / elapsed if elapsed > 0 else 0.0

    def eta(self):
        """Seconds left at the current rate, or None when unknown."""
        rate = self.rate()
        if self.total is None or rate <= 0:
            return None
        return max(self.total - self.done, 0) / rate

    def update(self, n=1):
        """Record ``n`` finished units; print a line if ``interval`` seconds passed since the last."""
        self.done += n
        now = time.perf_counter()
        if now - self._last_print >= self.interval:
            self._last_print = now
            self._print(self._status())

    def close(self):
        """Print the final summary line (once)."""
        if self._closed:
            return
        self._closed = True
        elapsed = time.perf_counter() - self.start
        self._print(f"{self.desc}: {self.done} {self.unit} in {format_duration(elapsed)} "
                    f"({self.rate():.1f} {self.unit}/s)")

    def _status(self):
        if self.total:
            head = f"{self.desc}: {self.done}/{self.total} ({100.0 * self.done / self.total:.1f}%)"
        else:
            head = f"{self.desc}: {self.done}"
        eta = self.eta()
        tail = f", ETA {format_duration(eta)}" if eta is not None else ""
        return f"{head} {self.rate():.1f} {self.unit}/s{tail}"

    def _print(self, line):
        print(line, file=self.stream or sys.stdout, flush=True)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        self.close()
        return False
