"""Drawing detections on images (infer.py and the demo)."""
import cv2
import numpy as np

from src.utils.atomic_io import atomic_path

# Distinct, readable colours (RGB); cycled by class.
PALETTE = np.array([
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
    (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (220, 190, 255),
    (170, 110, 40), (255, 250, 200), (128, 0, 0), (170, 255, 195), (128, 128, 0), (255, 215, 180),
    (0, 0, 128), (128, 128, 128)], np.uint8)


def class_colour(label):
    """RGB colour of a contiguous class label."""
    return tuple(int(c) for c in PALETTE[(int(label) - 1) % len(PALETTE)])


def draw_instances(image_rgb, boxes, labels, masks, class_names, scores=None, alpha=0.45):
    """Overlay instances on an image.

    Args:
        image_rgb: (H, W, 3) uint8. boxes: (N, 4) x1, y1, x2, y2 in pixels. labels: (N,) contiguous
        labels. masks: (N, H, W) binary or None. class_names: {label: name}. scores: (N,) or None.
    Returns:
        (H, W, 3) uint8 RGB copy with masks, box outlines and "name score" tags.
    """
    out = image_rgb.astype(np.float32).copy()
    h, w = out.shape[:2]
    order = np.argsort([-(b[2] - b[0]) * (b[3] - b[1]) for b in boxes]) if len(boxes) else []
    for i in order:  # large first, so small objects stay visible on top
        if masks is not None:
            m = masks[i].astype(bool)
            out[m] = out[m] * (1 - alpha) + np.array(class_colour(labels[i]), np.float32) * alpha
    out = np.clip(out, 0, 255).astype(np.uint8)
    scale = max(0.4, min(h, w) / 700.0)
    thick = max(1, int(round(scale * 2)))
    for i in order:
        colour = class_colour(labels[i])
        x1, y1, x2, y2 = [int(round(v)) for v in boxes[i]]
        cv2.rectangle(out, (x1, y1), (x2, y2), colour, thick, cv2.LINE_AA)
        text = class_names.get(int(labels[i]), str(int(labels[i])))
        if scores is not None:
            text += f" {scores[i]:.2f}"
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        ty = max(y1, th + base + 2)
        cv2.rectangle(out, (x1, ty - th - base - 2), (min(x1 + tw + 4, w - 1), ty), colour, -1)
        # dark text on light colours, white on dark ones
        ink = (0, 0, 0) if sum(colour) > 382 else (255, 255, 255)
        cv2.putText(out, text, (x1 + 2, ty - base), cv2.FONT_HERSHEY_SIMPLEX, scale, ink, 1, cv2.LINE_AA)
    return out


def side_by_side(left, right, left_title, right_title):
    """Two RGB images next to each other with titles above; (H + bar, W1 + W2 + gap, 3) uint8."""
    h = max(left.shape[0], right.shape[0])
    bar, gap = 28, 8
    canvas = np.full((h + bar, left.shape[1] + gap + right.shape[1], 3), 255, np.uint8)
    canvas[bar:bar + left.shape[0], :left.shape[1]] = left
    canvas[bar:bar + right.shape[0], left.shape[1] + gap:] = right
    for x, title in ((4, left_title), (left.shape[1] + gap + 4, right_title)):
        cv2.putText(canvas, title, (x, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 1, cv2.LINE_AA)
    return canvas


def write_png(path, image_rgb):
    """Write an RGB image as PNG, atomically."""
    with atomic_path(path) as tmp:
        if not cv2.imwrite(tmp, cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR)):
            raise OSError(f"cannot write {path}")
