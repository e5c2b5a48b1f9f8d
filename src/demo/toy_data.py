"""A small synthetic COCO-format instance segmentation data set, for tests, demos and benchmarks.

``python -m src.demo.toy_data --out DIR --train N --val M --seed S`` writes::

    DIR/train2017/000000000001.jpg ...
    DIR/val2017/000000900001.jpg ...
    DIR/annotations/instances_train2017.json
    DIR/annotations/instances_val2017.json

Scenes are textured backgrounds with a few shapes with curved boundaries (disc, ellipse, rounded
star, crescent, blob), one class per shape, random size, colour and shading. Later shapes occlude
earlier ones: every annotation describes the *visible* part (its polygon is traced from the visible
mask), so boundaries and occlusions both matter. Some images carry an ``iscrowd=1`` cluster of small
discs as an RLE annotation, and a few have no objects at all. Category ids are deliberately not
contiguous (2, 5, 9, 14, 23) so that the id <-> label mapping is exercised.

Everything is drawn from one seed: the same arguments give byte-identical JSON and JPEG files.
The annotation file of a split is written last (temporary name, then rename), so an interrupted run
leaves no annotation file that lists missing images.
"""
import argparse
import os
import sys
import zlib

import cv2
import numpy as np
from pycocotools import mask as mask_utils

from src.utils.atomic_io import write_json_atomic
from src.utils.progress import Progress

# (category id, name); ids are not contiguous on purpose.
CATEGORIES = ((2, "disc"), (5, "ellipse"), (9, "star"), (14, "crescent"), (23, "blob"))
VAL_ID_OFFSET = 900000          # val image ids start here so that train and val ids never collide
JPEG_QUALITY = 90
MIN_VISIBLE_AREA = 24           # px; objects occluded below this are left out of the scene
HOLE_TOLERANCE = 4              # px; larger holes in a visible mask (polygons cannot express them) redraw the scene
EMPTY_IMAGE_PROB = 0.03
CROWD_PROB = 0.12
MAX_SCENE_TRIES = 12


def _shape_polygon(kind, rng, cx, cy, radius):
    """Boundary of one shape as an (N, 2) float array of continuous pixel coordinates."""
    t = np.linspace(0.0, 2.0 * np.pi, 96, endpoint=False)
    angle = rng.uniform(0.0, 2.0 * np.pi)
    if kind == "disc":
        rx = ry = radius
        r = np.ones_like(t)
    elif kind == "ellipse":
        rx, ry = radius, radius * rng.uniform(0.35, 0.7)
        r = np.ones_like(t)
    elif kind == "star":
        # r(t) = 1 + a cos(k t): k rounded tips, no sharp corners.
        rx = ry = radius / 1.35
        r = 1.0 + rng.uniform(0.25, 0.4) * np.cos(int(rng.integers(4, 7)) * t)
    else:  # blob: a few random low-frequency harmonics, always positive so the shape stays simple
        rx = ry = radius / 1.3
        r = np.ones_like(t)
        for k in range(2, 5):
            r += rng.uniform(0.0, 0.25 / (k - 1)) * np.cos(k * t + rng.uniform(0.0, 2.0 * np.pi))
    x = rx * r * np.cos(t)
    y = ry * r * np.sin(t)
    cos_a, sin_a = np.cos(angle), np.sin(angle)
    return np.stack([cx + cos_a * x - sin_a * y, cy + sin_a * x + cos_a * y], 1)


def _fill(mask, polygon, value):
    # cv2 puts integer coordinates at pixel centres, continuous coordinates put them at c + 0.5;
    # 4 fractional bits keep the curved boundary sub-pixel accurate.
    pts = np.round((polygon - 0.5) * 16.0).astype(np.int32)
    cv2.fillPoly(mask, [pts], value, lineType=cv2.LINE_8, shift=4)


def _shape_mask(kind, rng, height, width, cx, cy, radius):
    """Binary (height, width) uint8 mask of one shape."""
    mask = np.zeros((height, width), np.uint8)
    if kind == "crescent":
        _fill(mask, _shape_polygon("disc", rng, cx, cy, radius), 1)
        angle = rng.uniform(0.0, 2.0 * np.pi)
        shift = radius * rng.uniform(0.45, 0.75)
        bite = _shape_polygon("disc", rng, cx + shift * np.cos(angle), cy + shift * np.sin(angle),
                              radius * rng.uniform(0.8, 0.95))
        _fill(mask, bite, 0)
    else:
        _fill(mask, _shape_polygon(kind, rng, cx, cy, radius), 1)
    return mask


def _colourise(patterns, base, amplitude, noise):
    """uint8 (h, w, 3) image: channel k = base[k] + amplitude[k] * patterns[k] + noise.

    Built plane by plane and merged: numpy broadcasting over a trailing axis of 3 is ~10x slower.
    """
    planes = [p * np.float32(a) + np.float32(b) + noise for p, a, b in zip(patterns, amplitude, base)]
    return np.clip(cv2.merge(planes), 0, 255).astype(np.uint8)


def _noise(rng, shape, sigma):
    """Zero-mean uniform float32 noise with standard deviation ``sigma``.

    Drawn from random bytes: much faster than ``standard_normal`` and good enough for texture.
    """
    raw = np.frombuffer(rng.bytes(int(np.prod(shape))), np.uint8).reshape(shape).astype(np.float32)
    return (raw - np.float32(127.5)) * np.float32(sigma / 73.9)


def _background(rng, height, width):
    """A random textured (height, width, 3) uint8 background."""
    style = int(rng.integers(0, 4))
    xx = np.arange(width, dtype=np.float32)[None, :]
    yy = np.arange(height, dtype=np.float32)[:, None]
    base = rng.uniform(40, 215, size=3)
    noise = _noise(rng, (height, width), 6.0)
    if style == 3:      # clouds: low-resolution colour noise upsampled
        small = rng.uniform(-60, 60, size=(max(height // 24, 2), max(width // 24, 2), 3)).astype(np.float32)
        clouds = cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)
        return _colourise(cv2.split(clouds), base, np.ones(3), noise)
    if style == 0:      # gradient
        direction = rng.normal(size=2)
        pattern = (xx * np.float32(direction[0]) + yy * np.float32(direction[1])) / np.float32(
            np.abs(direction).sum() * max(height, width))
        amplitude = rng.uniform(-90, 90, size=3)
    elif style == 1:    # stripes
        angle = rng.uniform(0, np.pi)
        period = rng.uniform(6, 30)
        pattern = np.sin((xx * np.float32(np.cos(angle)) + yy * np.float32(np.sin(angle)))
                         * np.float32(2 * np.pi / period))
        amplitude = rng.uniform(10, 50, size=3)
    else:               # blurred checkerboard
        cell = int(rng.integers(8, 40))
        pattern = cv2.GaussianBlur(((xx // cell) + (yy // cell)) % 2, (0, 0), 1.5)
        amplitude = rng.uniform(-60, 60, size=3)
    return _colourise([pattern] * 3, base, amplitude, noise)


def _paint(img, mask, rng):
    """Paint a shaded, slightly noisy colour into ``img`` where ``mask`` is set."""
    rows = np.flatnonzero(mask.any(1))
    cols = np.flatnonzero(mask.any(0))
    if len(rows) == 0:
        return
    y1, y2, x1, x2 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    xx = np.linspace(-0.5, 0.5, x2 - x1, dtype=np.float32)[None, :]
    yy = np.linspace(-0.5, 0.5, y2 - y1, dtype=np.float32)[:, None]
    direction = rng.normal(size=2)
    shade = (xx * np.float32(direction[0]) + yy * np.float32(direction[1])) / np.float32(np.abs(direction).sum())
    colour = rng.uniform(0, 255, size=3)
    pixels = _colourise([shade] * 3, colour, np.full(3, rng.uniform(40, 100)), _noise(rng, shade.shape, 4.0))
    # cv2.copyTo writes into the view in place (far faster than boolean indexing).
    cv2.copyTo(pixels, mask[y1:y2, x1:x2], img[y1:y2, x1:x2])


def _polygons(visible):
    """Trace a binary mask: (COCO polygons, has_hole).

    Polygons are flat [x0, y0, x1, y1, ...] lists of the outer boundaries. Contour points are
    boundary pixel indices; +0.5 puts them at the pixel centres in continuous coordinates (the
    closest match to the mask when pycocotools rasterises them). ``has_hole`` is True when the mask
    has a hole larger than HOLE_TOLERANCE pixels, which a union of polygons cannot represent.
    """
    contours, hierarchy = cv2.findContours(visible, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    polygons, has_hole = [], False
    for contour, (_, _, _, parent) in zip(contours, hierarchy[0] if hierarchy is not None else []):
        if parent >= 0:
            has_hole = has_hole or cv2.contourArea(contour) > HOLE_TOLERANCE
            continue
        contour = cv2.approxPolyDP(contour, 0.5, True).reshape(-1, 2)
        if len(contour) >= 3 and cv2.contourArea(contour) >= 2.0:
            polygons.append([round(float(v), 2) for v in (contour.astype(np.float64) + 0.5).ravel()])
    return polygons, has_hole


def _crowd_mask(rng, height, width):
    """A cluster of small discs (an ``iscrowd`` region)."""
    mask = np.zeros((height, width), np.uint8)
    cx, cy = rng.uniform(0.2, 0.8) * width, rng.uniform(0.2, 0.8) * height
    spread = 0.12 * min(height, width)
    for _ in range(int(rng.integers(6, 14))):
        x, y = cx + rng.normal(0, spread), cy + rng.normal(0, spread)
        _fill(mask, _shape_polygon("disc", rng, x, y, rng.uniform(2.5, 5.0)), 1)
    return mask


def _try_scene(rng, height, width, num_objects, with_crowd):
    """One attempt at a scene: (image, objects) or None if some visible mask has a hole.

    objects: bottom to top, (category_id, iscrowd, visible (height, width) uint8 mask, polygons or
    None for the crowd region).
    """
    img = _background(rng, height, width)
    layers = []  # bottom to top: (category_id, iscrowd, mask)
    if with_crowd:
        layers.append((CATEGORIES[0][0], True, _crowd_mask(rng, height, width)))
    min_side = min(height, width)
    for _ in range(num_objects):
        category_id, kind = CATEGORIES[int(rng.integers(0, len(CATEGORIES)))]
        radius = rng.uniform(0.06, 0.3) * min_side
        cx, cy = rng.uniform(0.05, 0.95) * width, rng.uniform(0.05, 0.95) * height
        layers.append((category_id, False, _shape_mask(kind, rng, height, width, cx, cy, radius)))
    for _, _, mask in layers:
        _paint(img, mask, rng)
    objects = []
    covered = np.zeros((height, width), np.uint8)
    for category_id, crowd, mask in reversed(layers):
        visible = mask & (1 - covered)
        covered |= mask
        if int(visible.sum()) < MIN_VISIBLE_AREA:
            continue
        polygons = None
        if not crowd:
            polygons, has_hole = _polygons(visible)
            if has_hole:
                return None
            if not polygons:
                continue
        objects.append((category_id, crowd, visible, polygons))
    objects.reverse()
    return img, objects


def _scene(rng, height, width, max_objects):
    """An image and its objects; retries (fewer objects each time) until no visible mask has a hole."""
    if rng.uniform() < EMPTY_IMAGE_PROB:
        return _background(rng, height, width), []
    num_objects = int(rng.integers(1, max_objects + 1))
    with_crowd = rng.uniform() < CROWD_PROB
    for attempt in range(MAX_SCENE_TRIES):
        scene = _try_scene(rng, height, width, max(1, num_objects - attempt // 3), with_crowd)
        if scene is not None:
            return scene
    # One shape on its own never has a hole (all are simply connected), so this always succeeds.
    return _try_scene(rng, height, width, 1, False)


def _annotation(ann_id, image_id, category_id, crowd, visible, polygons):
    """One COCO annotation dict for a visible mask."""
    height, width = visible.shape
    if crowd:
        # COCO stores crowd regions as uncompressed RLE (counts as a list of run lengths).
        flat = visible.ravel(order="F")
        changes = np.flatnonzero(np.diff(flat)) + 1
        bounds = np.concatenate([[0], changes, [flat.size]])
        counts = np.diff(bounds).tolist()
        if flat[0] == 1:
            counts = [0] + counts
        segmentation = {"size": [height, width], "counts": counts}
        rle = mask_utils.frPyObjects(segmentation, height, width)
        bbox = [float(v) for v in mask_utils.toBbox(rle)]
    else:
        segmentation = polygons
        rle = mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))
        points = np.concatenate([np.array(p).reshape(-1, 2) for p in polygons])
        x1, y1 = points.min(0)
        x2, y2 = points.max(0)
        bbox = [round(float(x1), 2), round(float(y1), 2), round(float(x2 - x1), 2), round(float(y2 - y1), 2)]
    return {"id": ann_id, "image_id": image_id, "category_id": int(category_id), "segmentation": segmentation,
            "area": float(mask_utils.area(rle)), "bbox": bbox, "iscrowd": int(crowd)}


def write_split(out_dir, split, num_images, seed, first_image_id, width=320, height=240, max_objects=6,
                size_jitter=0.2):
    """Write ``num_images`` images to ``out_dir/split`` and their annotation file.

    Image sizes vary by +-``size_jitter`` around width x height. Returns the annotation file path.
    """
    image_dir = os.path.join(out_dir, split)
    ann_dir = os.path.join(out_dir, "annotations")
    os.makedirs(image_dir, exist_ok=True)
    os.makedirs(ann_dir, exist_ok=True)
    # One independent stream per image: the content of an image depends only on (seed, split, index).
    seeds = np.random.SeedSequence([seed, zlib.crc32(split.encode())]).spawn(num_images)
    images, annotations = [], []
    progress = Progress(num_images, f"toy {split}")
    for index in range(num_images):
        rng = np.random.default_rng(seeds[index])
        w = int(round(width * rng.uniform(1.0 - size_jitter, 1.0 + size_jitter)))
        h = int(round(height * rng.uniform(1.0 - size_jitter, 1.0 + size_jitter)))
        image_id = first_image_id + index
        file_name = f"{image_id:012d}.jpg"
        img, objects = _scene(rng, h, w, max_objects)
        ok, jpeg = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        if not ok:
            raise RuntimeError(f"cv2 could not encode {file_name}")
        with open(os.path.join(image_dir, file_name), "wb") as f:
            f.write(jpeg.tobytes())
        images.append({"id": image_id, "file_name": file_name, "height": h, "width": w})
        for category_id, crowd, visible, polygons in objects:
            annotations.append(_annotation(len(annotations) + 1, image_id, category_id, crowd, visible, polygons))
        progress.update()
    progress.close()
    coco = {
        "info": {"description": "synthetic toy shapes (src/demo/toy_data.py)", "version": "1.0", "seed": seed},
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": [{"id": cid, "name": name, "supercategory": "shape"} for cid, name in CATEGORIES],
    }
    ann_path = os.path.join(ann_dir, f"instances_{split}.json")
    write_json_atomic(ann_path, coco)
    return ann_path


def make_toy_coco(out_dir, num_train, num_val, seed=0, width=320, height=240, max_objects=6,
                  train_split="train2017", val_split="val2017"):
    """Write a toy COCO data set (both splits) under ``out_dir``; returns ``out_dir``."""
    write_split(out_dir, train_split, num_train, seed, 1, width, height, max_objects)
    write_split(out_dir, val_split, num_val, seed, VAL_ID_OFFSET + 1, width, height, max_objects)
    return out_dir


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="output COCO root")
    parser.add_argument("--train", type=int, default=200, help="number of training images")
    parser.add_argument("--val", type=int, default=50, help="number of validation images")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--width", type=int, default=320, help="mean image width (+-20%%)")
    parser.add_argument("--height", type=int, default=240, help="mean image height (+-20%%)")
    parser.add_argument("--max-objects", type=int, default=6, help="at most this many shapes per image")
    args = parser.parse_args(argv)
    for name in ("train", "val"):
        if getattr(args, name) < 0:
            parser.error(f"--{name} must be >= 0")
    if args.width < 32 or args.height < 32 or args.max_objects < 1:
        parser.error("--width/--height must be >= 32 and --max-objects >= 1")
    make_toy_coco(args.out, args.train, args.val, args.seed, args.width, args.height, args.max_objects)
    print(f"toy COCO data set written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
