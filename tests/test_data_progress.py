"""The progress helper used by conversion, training and evaluation."""
import io

from src.utils.progress import Progress, format_duration


def test_format_duration():
    assert format_duration(5.2) == "0:05"
    assert format_duration(3725.2) == "1:02:05"
    assert format_duration(-3) == "0:00"


def test_progress_prints_rate_and_eta(monkeypatch):
    clock = [100.0]
    monkeypatch.setattr("src.utils.progress.time.perf_counter", lambda: clock[0])
    out = io.StringIO()
    progress = Progress(100, "convert train", unit="images", interval=5.0, stream=out)
    clock[0] += 2.0
    progress.update(10)
    assert out.getvalue() == ""  # less than `interval` since the start
    clock[0] += 4.0
    progress.update(20)
    assert out.getvalue() == "convert train: 30/100 (30.0%) 5.0 images/s, ETA 0:14\n"
    progress.close()
    progress.close()
    assert out.getvalue().splitlines()[-1] == "convert train: 30 images in 0:06 (5.0 images/s)"
    assert len(out.getvalue().splitlines()) == 2


def test_progress_without_total():
    out = io.StringIO()
    with Progress(None, "steps", unit="steps", interval=0.0, stream=out) as progress:
        progress.update(3)
    first, last = out.getvalue().splitlines()
    assert first.startswith("steps: 3 ") and "ETA" not in first and last.startswith("steps: 3 steps in")
