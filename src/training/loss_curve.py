"""Training loss curve as a PNG (drawn with OpenCV, no plotting library needed)."""
import cv2
import numpy as np

from src.utils.visualize import write_png

COLOURS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
           (227, 119, 194)]


def write_loss_curve(path, steps, series, title="training loss"):
    """Plot loss series against steps and write a PNG atomically (drawn in RGB).

    Args:
        path: output .png path. steps: (N,) step numbers.
        series: {name: (N,) values}; non-finite values are left out of the plot.
    """
    width, height = 960, 540
    left, right, top, bottom = 80, 200, 40, 60
    canvas = np.full((height, width, 3), 255, np.uint8)
    steps = np.asarray(steps, np.float64)
    values = [np.asarray(v, np.float64) for v in series.values()]
    finite = np.concatenate([v[np.isfinite(v)] for v in values]) if values else np.array([])
    if steps.size == 0 or finite.size == 0:
        y_max, x_min, x_max = 1.0, 0.0, 1.0
    else:
        y_max = float(np.percentile(finite, 99)) * 1.05 or 1.0
        x_min, x_max = float(steps.min()), float(max(steps.max(), steps.min() + 1))
    plot_w, plot_h = width - left - right, height - top - bottom

    def to_px(x, y):
        px = left + (x - x_min) / (x_max - x_min) * plot_w
        py = top + plot_h - min(max(y, 0.0), y_max) / y_max * plot_h
        return int(round(px)), int(round(py))

    black, grey = (0, 0, 0), (220, 220, 220)
    for i in range(6):
        y = y_max * i / 5
        _, py = to_px(x_min, y)
        cv2.line(canvas, (left, py), (left + plot_w, py), grey, 1)
        cv2.putText(canvas, f"{y:.3g}", (8, py + 5), cv2.FONT_HERSHEY_SIMPLEX, 0.45, black, 1, cv2.LINE_AA)
        x = x_min + (x_max - x_min) * i / 5
        px, _ = to_px(x, 0)
        cv2.putText(canvas, f"{int(round(x))}", (px - 15, top + plot_h + 20), cv2.FONT_HERSHEY_SIMPLEX, 0.45, black, 1,
                    cv2.LINE_AA)
    cv2.rectangle(canvas, (left, top), (left + plot_w, top + plot_h), black, 1)
    cv2.putText(canvas, "step", (left + plot_w // 2 - 15, height - 15), cv2.FONT_HERSHEY_SIMPLEX, 0.55, black, 1,
                cv2.LINE_AA)
    cv2.putText(canvas, title, (left, 25), cv2.FONT_HERSHEY_SIMPLEX, 0.65, black, 1, cv2.LINE_AA)
    for i, (name, v) in enumerate(series.items()):
        colour = COLOURS[i % len(COLOURS)]
        v = np.asarray(v, np.float64)
        ok = np.isfinite(v)
        pts = np.array([to_px(x, y) for x, y in zip(steps[ok], v[ok])], np.int32)
        if len(pts) > 1:
            cv2.polylines(canvas, [pts.reshape(-1, 1, 2)], False, colour, 2 if i == 0 else 1, cv2.LINE_AA)
        ly = top + 20 + 22 * i
        cv2.line(canvas, (left + plot_w + 15, ly - 5), (left + plot_w + 40, ly - 5), colour, 2)
        cv2.putText(canvas, name, (left + plot_w + 48, ly), cv2.FONT_HERSHEY_SIMPLEX, 0.5, black, 1, cv2.LINE_AA)
    write_png(path, canvas)
