"""Image, box and mask transforms of the input pipeline (numpy, cv2 and pycocotools; no MindSpore).

Coordinates are continuous pixels: pixel column c covers [c, c + 1), so its centre is c + 0.5.
Every geometric step (SSD-style expand, resize, horizontal flip) is axis-aligned, so the whole chain
is one map per axis from original-image coordinates to canvas coordinates (``Geometry``). Boxes go
through it forwards; GT masks are rasterised on the canvas through its inverse, straight from the
original-resolution mask (``canvas_bitmasks``).

The network's GT mask format: instance k travels as its canvas box and its canvas-sized 0/1 mask,
packed 8 pixels per byte (``pack_bitmasks``): the full-resolution bitmask detectron2 samples point
labels and coarse targets from, at 1/8 of the bytes of the model zoo's bool bitmaps.
"""
import threading
import zlib

import cv2
import numpy as np
from pycocotools import mask as mask_utils

from src.dataset.image_records import select_instances

EXPAND_MAX_RATIO = 4.0      # SSD zoom-out: the canvas side is U(1, 4) x the image side
EXPAND_APPLY_PROB = 0.5     # of the tries (config expand_ratio), as in the model zoo
MASKS_PER_PACK = 16         # instances rasterised on the canvas at once before packing


def rescale_size(height, width, canvas_h, canvas_w, keep_ratio):
    """(new_h, new_w) of an image resized into a canvas_h x canvas_w canvas.

    keep_ratio: the model-zoo rule, scale = min(long canvas side / long image side, short canvas side /
    short image side), shrunk further if the result still exceeds the canvas. Otherwise the image is
    stretched to the canvas.
    """
    if not keep_ratio:
        return canvas_h, canvas_w
    scale = min(max(canvas_h, canvas_w) / max(height, width), min(canvas_h, canvas_w) / min(height, width))
    scale = min(scale, canvas_h / height, canvas_w / width)
    new_h = min(max(int(height * scale + 0.5), 1), canvas_h)
    new_w = min(max(int(width * scale + 0.5), 1), canvas_w)
    return new_h, new_w


def shortest_edge_size(height, width, min_size, max_size):
    """detectron2's ``ResizeShortestEdge`` size: the shorter side becomes ``min_size`` unless the
    longer side would then exceed ``max_size``; sides rounded as int(x + 0.5).

    Returns:
        (new_h, new_w).
    """
    scale = min_size / min(height, width)
    new_h, new_w = (min_size, scale * width) if height < width else (scale * height, min_size)
    if max(new_h, new_w) > max_size:
        shrink = max_size / max(new_h, new_w)
        new_h, new_w = new_h * shrink, new_w * shrink
    return int(new_h + 0.5), int(new_w + 0.5)


def fit_canvas(new_h, new_w, height, width, cfg):
    """(new_h, new_w) if it fits the canvas, else the keep-ratio size that fills it."""
    if new_h <= cfg.img_height and new_w <= cfg.img_width:
        return new_h, new_w
    return rescale_size(height, width, cfg.img_height, cfg.img_width, True)


def train_size(height, width, cfg, rng):
    """Size of a training image by ``cfg.resize_rule``: shortest_edge draws the shorter side from
    ``min_size_train`` (detectron2's multi-scale "choice" sampling, longer side at most
    ``max_size_train``), shrunk to fit the canvas; modelzoo fits the canvas."""
    if cfg.resize_rule == "shortest_edge":
        short = int(rng.choice(cfg.min_size_train))
        return fit_canvas(*shortest_edge_size(height, width, short, cfg.max_size_train), height, width, cfg)
    return rescale_size(height, width, cfg.img_height, cfg.img_width, cfg.keep_ratio)


def eval_size(height, width, cfg):
    """Size (new_h, new_w) of an image resized for evaluation/inference by ``cfg.resize_rule``.

    shortest_edge: detectron2's size, shrunk (keeping the aspect ratio) when it does not fit the
    canvas, e.g. a portrait image on a landscape canvas.
    """
    if cfg.resize_rule == "shortest_edge":
        return fit_canvas(*shortest_edge_size(height, width, cfg.min_size_test, cfg.max_size_test), height, width,
                          cfg)
    return rescale_size(height, width, cfg.img_height, cfg.img_width, cfg.keep_ratio)


class Geometry:
    """Axis-aligned map original image -> canvas in continuous pixel coordinates.

    X = scale_x * (x + offset_x), Y = scale_y * (y + offset_y), then X -> flip_width - X if flipped.
    offset: where the image sits inside the expand canvas; scale: resized size / (expanded) size.
    """

    def __init__(self, scale_x, scale_y, offset_x=0.0, offset_y=0.0, flip_width=None):
        self.scale_x, self.scale_y = float(scale_x), float(scale_y)
        self.offset_x, self.offset_y = float(offset_x), float(offset_y)
        self.flip_width = flip_width

    def boxes(self, boxes):
        """(n, 4) x1, y1, x2, y2 boxes of the original image -> canvas boxes (float32)."""
        out = np.empty((len(boxes), 4), np.float64)
        out[:, 0::2] = (boxes[:, 0::2] + self.offset_x) * self.scale_x
        out[:, 1::2] = (boxes[:, 1::2] + self.offset_y) * self.scale_y
        if self.flip_width is not None:
            out[:, [0, 2]] = self.flip_width - out[:, [2, 0]]
        return out.astype(np.float32)

    def source_x(self, xs):
        """Canvas x coordinates -> original-image x coordinates."""
        xs = np.asarray(xs, np.float64)
        if self.flip_width is not None:
            xs = self.flip_width - xs
        return xs / self.scale_x - self.offset_x

    def source_y(self, ys):
        """Canvas y coordinates -> original-image y coordinates."""
        return np.asarray(ys, np.float64) / self.scale_y - self.offset_y


def canvas_bitmasks(rles, geometry, new_h, new_w, canvas_h, canvas_w):
    """Instance masks on the canvas, pixel by pixel: canvas pixel (r, c) takes the original-image
    pixel under its centre (c + 0.5, r + 0.5) (nearest, as detectron2 resizes a bitmask), zero off
    the image and beyond the resized image (new_h x new_w).

    Args:
        rles: n compressed COCO RLE dicts at the original image size.
        geometry: the Geometry that produced the canvas.
    Returns:
        (n, canvas_h, canvas_w) uint8 in {0, 1}.
    """
    out = np.zeros((len(rles), canvas_h, canvas_w), np.uint8)
    if not rles:
        return out
    masks = mask_utils.decode(rles)  # (h, w, n)
    h, w = masks.shape[:2]
    xs = np.floor(geometry.source_x(np.arange(new_w) + 0.5)).astype(np.int64)
    ys = np.floor(geometry.source_y(np.arange(new_h) + 0.5)).astype(np.int64)
    cols, rows = np.flatnonzero((xs >= 0) & (xs < w)), np.flatnonzero((ys >= 0) & (ys < h))
    if len(cols) and len(rows):
        picked = masks[np.ix_(ys[rows], xs[cols])]  # (rows, cols, n)
        out[:, rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1] = np.transpose(picked, (2, 0, 1))
    return out


def pack_bitmasks(masks):
    """(n, H, W) 0/1 masks -> (n, ceil(H * W / 8)) uint8: each mask's pixels in row-major order,
    8 per byte, the first pixel in the highest bit (``np.packbits``); read by
    ``maskrcnn.mask_targets.bitmask_samples``."""
    return np.packbits(masks.reshape(len(masks), -1).astype(bool), axis=1)


def packed_mask_bytes(height, width):
    """Bytes per packed instance mask of a height x width canvas."""
    return (height * width + 7) // 8


def normalize_and_pad(image_bgr, canvas_h, canvas_w, mean, std, channel_order="RGB"):
    """(h, w, 3) uint8 BGR -> (3, canvas_h, canvas_w) float32 in ``channel_order`` (RGB or BGR),
    normalised with ``mean`` and ``std`` given in that order, zero-padded bottom/right.

    Padding comes after normalisation, so the padded area is exactly 0 (the value of a mean pixel),
    as detectron2's ``ImageList`` pads.
    """
    h, w = image_bgr.shape[:2]
    out = np.zeros((3, canvas_h, canvas_w), np.float32)
    planes = cv2.split(image_bgr)
    if channel_order == "RGB":
        planes = planes[::-1]
    for c, (mean_c, std_c) in enumerate(zip(mean, std)):
        # (x - mean) / std written straight into the canvas view: one pass, faster than numpy
        source = planes[c]
        cv2.addWeighted(source, 1.0 / std_c, source, 0.0, -mean_c / std_c, dst=out[c, :h, :w], dtype=cv2.CV_32F)
    return out


def decode_image(image_bytes):
    """(h, w, 3) uint8 BGR image from a MindRecord bytes column (EXIF rotation ignored, as at conversion)."""
    buffer = np.frombuffer(image_bytes.tobytes() if isinstance(image_bytes, np.ndarray) else image_bytes, np.uint8)
    image = cv2.imdecode(buffer, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    if image is None:
        raise ValueError("image bytes do not decode")
    return image


class EvalTransform:
    """MindRecord row -> evaluation inputs.

    Call with (image bytes, image_id, height, width); returns
        img (3, H, W) float32, img_metas (4,) float32 = (h, w, scale_h, scale_w) of the resized image
        on the canvas, image_id () int32, orig_hw (2,) float32 = (original height, width).
    A canvas box maps back to the original image as box / scale.
    """

    def __init__(self, cfg):
        self.cfg = cfg
        self.canvas_h, self.canvas_w = cfg.img_height, cfg.img_width
        self.mean, self.std = tuple(cfg.img_mean), tuple(cfg.img_std)
        self.channel_order = cfg.img_format

    def __call__(self, image, image_id, height, width):
        img = decode_image(image)
        h0, w0 = img.shape[:2]
        new_h, new_w = eval_size(h0, w0, self.cfg)
        img = cv2.resize(img, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
        metas = np.array([new_h, new_w, new_h / h0, new_w / w0], np.float32)
        return (normalize_and_pad(img, self.canvas_h, self.canvas_w, self.mean, self.std, self.channel_order), metas,
                np.array(image_id, np.int32), np.array([height, width], np.float32))


class TrainTransform:
    """MindRecord row -> training inputs, with random expand and horizontal flip.

    Call with (image, num_instances, boxes, labels, iscrowd, mask_lengths, masks) columns; returns
        img (3, H, W) float32; img_metas (4,) float32 = (h, w, scale_h, scale_w), scale = canvas
        pixels per original-image pixel; gt_bboxes (G, 4) float32 canvas boxes; gt_labels (G,) int32
        (0 = padding); gt_valids (G,) bool (real non-crowd instances); gt_masks (G, L) uint8 packed
        canvas masks (``pack_bitmasks``, L = ceil(H * W / 8)).
    G = cfg.max_instance_count. Crowd instances keep their box and label but are not valid and get
    no mask.

    Args:
        cfg: the config (img_height, img_width, keep_ratio, flip_ratio, expand_ratio, img_mean, img_std,
            max_instance_count).
        seed: seed of the random draws (None: a fresh one). The k-th time the transform sees an
            image it draws from a generator seeded by (seed, the image's CRC-32, k): the same draws
            for every image whatever order the map's worker threads run in.
    """

    def __init__(self, cfg, seed=None):
        self.cfg = cfg
        self.canvas_h, self.canvas_w = cfg.img_height, cfg.img_width
        self.keep_ratio = cfg.keep_ratio
        self.flip_ratio = cfg.flip_ratio
        self.expand_ratio = cfg.expand_ratio
        self.mean, self.std = tuple(cfg.img_mean), tuple(cfg.img_std)
        self.channel_order = cfg.img_format
        self.max_instances = cfg.max_instance_count
        self.seed = np.random.SeedSequence().entropy if seed is None else seed
        self._visits = {}
        self._visits_lock = threading.Lock()

    def _generator(self, image):
        """The random generator of this visit of ``image`` (its encoded bytes)."""
        key = zlib.crc32(image)
        with self._visits_lock:
            visit = self._visits.get(key, 0)
            self._visits[key] = visit + 1
        return np.random.default_rng([self.seed, key, visit])

    def _expand(self, img, rng):
        """SSD zoom-out: (image on a mean-coloured canvas, offset_x, offset_y)."""
        if not (rng.uniform() < self.expand_ratio and rng.uniform() < EXPAND_APPLY_PROB):
            return img, 0, 0
        h, w = img.shape[:2]
        ratio = rng.uniform(1.0, EXPAND_MAX_RATIO)
        eh, ew = int(h * ratio), int(w * ratio)
        top, left = int(rng.uniform(0, eh - h)), int(rng.uniform(0, ew - w))
        bgr_mean = self.mean[::-1] if self.channel_order == "RGB" else self.mean
        fill = tuple(float(v) for v in np.round(bgr_mean))  # BGR, like the image
        canvas = cv2.copyMakeBorder(img, top, eh - h - top, left, ew - w - left, cv2.BORDER_CONSTANT, value=fill)
        return canvas, left, top

    def __call__(self, image, num_instances, boxes, labels, iscrowd, mask_lengths, masks):
        rng = self._generator(image)
        img = decode_image(image)
        h0, w0 = img.shape[:2]
        n = int(num_instances)
        # Zero-length columns come back from MindRecord as scalars: take the first n entries.
        boxes = np.asarray(boxes, np.float32).reshape(-1)[:4 * n].reshape(n, 4)
        labels = np.asarray(labels, np.int32).reshape(-1)[:n]
        crowd = np.asarray(iscrowd, np.int32).reshape(-1)[:n].astype(bool)
        lengths = np.asarray(mask_lengths, np.int64).reshape(-1)[:n]
        counts = masks.tobytes() if isinstance(masks, np.ndarray) else bytes(masks)
        ends = np.cumsum(lengths)
        rles = [{"size": [h0, w0], "counts": counts[end - length:end]} for end, length in zip(ends, lengths)]
        if n > self.max_instances:
            keep = select_instances(crowd.astype(int).tolist(), mask_utils.area(rles).tolist(), self.max_instances)
            boxes, labels, crowd = boxes[keep], labels[keep], crowd[keep]
            rles = [rles[i] for i in keep]
            n = len(keep)

        img, offset_x, offset_y = self._expand(img, rng)
        eh, ew = img.shape[:2]
        new_h, new_w = train_size(eh, ew, self.cfg, rng)
        img = cv2.resize(img, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
        flip = rng.uniform() < self.flip_ratio
        if flip:
            img = cv2.flip(img, 1)
        geometry = Geometry(new_w / ew, new_h / eh, offset_x, offset_y, new_w if flip else None)

        g = self.max_instances
        gt_bboxes = np.zeros((g, 4), np.float32)
        gt_labels = np.zeros((g,), np.int32)
        gt_valids = np.zeros((g,), np.bool_)
        gt_masks = np.zeros((g, packed_mask_bytes(self.canvas_h, self.canvas_w)), np.uint8)
        gt_bboxes[:n] = geometry.boxes(boxes)
        gt_labels[:n] = labels
        gt_valids[:n] = ~crowd
        valid = np.flatnonzero(~crowd)
        # a few instances at a time: their unpacked canvas masks are 8x the packed size
        for start in range(0, len(valid), MASKS_PER_PACK):
            part = valid[start:start + MASKS_PER_PACK]
            gt_masks[part] = pack_bitmasks(canvas_bitmasks([rles[i] for i in part], geometry, new_h, new_w,
                                                           self.canvas_h, self.canvas_w))
        metas = np.array([new_h, new_w, geometry.scale_y, geometry.scale_x], np.float32)
        return (normalize_and_pad(img, self.canvas_h, self.canvas_w, self.mean, self.std, self.channel_order), metas,
                gt_bboxes, gt_labels, gt_valids, gt_masks)
