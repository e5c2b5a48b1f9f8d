"""COCO-format data set -> MindRecord files, written so that a half-done conversion never looks done.

A conversion writes into a hidden ``.<name>.partial`` folder, moves the finished index files and
shards (the first shard last) into ``cfg.mindrecord_dir`` and writes classes.json and the meta file
before the first shard appears (see layout.py). Anything left by an interrupted run is removed by
the next one. Rows are built by a pool of worker processes (image_records.build_record); the parent
writes them.
"""
import contextlib
import math
import os
import re
import shutil
import sys
import time
from functools import partial

from src.dataset.class_map import classes_path, load_class_map, write_class_map
from src.dataset.coco_source import Issues, class_map_from_coco, image_tasks, load_coco_json
from src.dataset.errors import DatasetError
from src.dataset.image_records import RECORD_SCHEMA, RecordOptions, build_record
from src.dataset.layout import (EVAL_FILE, META_FORMAT, META_SUFFIX, TRAIN_FILE, first_shard_path, mindrecord_path,
                                mindrecord_prefix, read_meta, source_paths, split_name, stale_reason)
from src.utils.atomic_io import write_json_atomic
from src.utils.progress import Progress
from src.utils.worker_pool import worker_pool

# Fewer, larger shards for small data sets: every shard wastes about one page of padding.
MIN_SHARD_BYTES = 256 << 20
PAGE_STEP = 32 << 10         # FileWriter page sizes: multiples of this, up to MAX_PAGE_BYTES
MAX_PAGE_BYTES = 256 << 20
ROW_MARGIN = 64 << 10       # room for a row's annotations beside its image in a page
MAX_HEADER_BYTES = 128 << 20
WRITE_BATCH = 64            # rows per FileWriter.write_raw_data call
WAIT_POLL_S = 5.0           # how often ranks > 0 look for rank 0's finished conversion


def _remove_outputs(prefix):
    """Delete the partial folder, meta file, shards and index files of one split."""
    folder, name = os.path.split(prefix)
    shutil.rmtree(os.path.join(folder, f".{name}.partial"), ignore_errors=True)
    pattern = re.compile(re.escape(name) + r"\d*(\.db)?$")
    for entry in os.listdir(folder):
        if pattern.fullmatch(entry) or entry == name + META_SUFFIX:
            os.remove(os.path.join(folder, entry))


def _round_up(value, step):
    return int(math.ceil(value / step) * step)


def storage_layout(total_bytes, max_row_bytes, num_rows, max_shards, min_shard_bytes=MIN_SHARD_BYTES):
    """(shards, page size, header size) for FileWriter.

    MindRecord pads each shard to whole pages and leaves the tail of a page empty when the next row
    does not fit. Measured: a shard wastes about one page plus half a row per page, so the page
    size minimising the waste is sqrt(shard bytes x row bytes / 2) (the defaults, 32 MB pages and
    a 16 MB header, would triple a small data set). A page must hold the largest row; the header
    needs a few hundred bytes per page.
    """
    shards = int(max(1, min(max_shards, total_bytes // max(min_shard_bytes, 1))))
    per_shard = total_bytes / shards
    row = total_bytes / max(num_rows, 1)
    page = max(math.sqrt(per_shard * row / 2.0), 2 * max_row_bytes + ROW_MARGIN, PAGE_STEP)
    page = min(_round_up(page, PAGE_STEP), MAX_PAGE_BYTES)
    pages = per_shard / page * 1.5 + 8
    header = min(_round_up(512 * pages + (16 << 10), 16 << 10), MAX_HEADER_BYTES)
    return shards, page, header


def _rows(tasks, options, workers):
    """(row or None, issues) per task, in task order, built by ``workers`` processes."""
    build = partial(build_record, options=options)
    if workers <= 1:
        yield from map(build, tasks)
        return
    # fork: the conversion runs before any MindSpore kernel, and workers only use numpy/cv2/pycocotools
    with worker_pool(workers, "fork") as pool:
        yield from pool.imap(build, tasks, chunksize=8)


def convert_coco_to_mindrecord(cfg, is_training, workers=None, min_shard_bytes=MIN_SHARD_BYTES):
    """Convert the training or evaluation split of ``cfg.coco_root`` into MindRecord files.

    Training keeps images with at least one usable non-crowd instance and at most
    ``cfg.max_instance_count`` instances each (the largest); evaluation keeps every decodable image
    and all its instances. Bad entries are skipped or clipped with counted warnings (a summary is
    printed at the end). Returns the meta dict (also saved as ``<prefix>.meta.json``).

    Raises DatasetError (one line) when the source is missing or nothing usable remains.
    """
    workers = cfg.convert_workers if workers is None else workers
    prefix = mindrecord_prefix(cfg, is_training)
    ann_file, image_dir = source_paths(cfg, is_training)
    data = load_coco_json(ann_file)
    if not os.path.isdir(image_dir):
        raise DatasetError(f"image folder not found: {image_dir}")
    class_map = class_map_from_coco(data, ann_file)
    folder, name = os.path.split(prefix)
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as e:
        raise DatasetError(f"cannot create mindrecord_dir {folder}: {e.strerror}") from None
    _check_class_map_conflict(folder, class_map, is_training, ann_file)
    _remove_outputs(prefix)

    split = split_name(is_training)
    issues = Issues()
    tasks = image_tasks(data, image_dir, issues)
    if not tasks:
        raise DatasetError(f"annotation file {ann_file} lists no usable image")
    sizes = [os.path.getsize(t.path) if os.path.isfile(t.path) else 0 for t in tasks]
    shards, page, header = storage_layout(sum(sizes) * 1.05, max(sizes), len(tasks),
                                          cfg.mindrecord_shards if is_training else 1, min_shard_bytes)
    check_free_space(folder, expected_bytes(sum(sizes), shards, page, header))
    options = RecordOptions(label_of={cid: class_map.label_of(cid) for cid in class_map.category_ids},
                            max_instances=cfg.max_instance_count if is_training else None,
                            keep_empty=not is_training)
    print(f"convert {split}: {len(tasks)} images of {ann_file} -> {prefix} ({shards} shard(s), "
          f"{workers} worker(s))", flush=True)

    partial_dir = os.path.join(folder, f".{name}.partial")
    first_shard = os.path.basename(mindrecord_path(cfg, is_training))
    # FileWriter names one shard exactly as given and N shards base0..baseN-1: for training the
    # single shard is given the "0" itself, so the first shard's name never depends on N.
    base = first_shard if shards == 1 else name
    try:
        with _writing(folder):
            os.makedirs(partial_dir)
        written, instances, image_bytes, image_ids = _write_rows(
            os.path.join(partial_dir, base), shards, page, header, tasks, options, workers, issues, split)
        if written == 0:
            raise DatasetError(f"no usable image in {ann_file} (see the warnings above)")
        produced = os.listdir(partial_dir)
        shard_files = sorted((f for f in produced if not f.endswith(".db")), key=_shard_order)
        index_files = sorted(f for f in produced if f.endswith(".db"))
        meta = {
            "format": META_FORMAT, "split": split, "files": shard_files, "index_files": index_files,
            "num_images": written, "num_instances": instances, "image_bytes": image_bytes,
            "annotation_file": os.path.abspath(ann_file), "annotation_bytes": os.path.getsize(ann_file),
            "image_dir": os.path.abspath(image_dir),
            "max_instance_count": cfg.max_instance_count if is_training else None,
            "category_ids": class_map.category_ids, "issues": dict(issues.counts),
            "image_ids": None if is_training else image_ids,
        }
        with _writing(folder):
            for entry in produced:
                if entry != first_shard:
                    os.replace(os.path.join(partial_dir, entry), os.path.join(folder, entry))
            write_class_map(class_map, classes_path(folder))
            write_json_atomic(prefix + META_SUFFIX, meta, indent=1)
            os.replace(os.path.join(partial_dir, first_shard), os.path.join(folder, first_shard))
            os.rmdir(partial_dir)
    except BaseException:
        _remove_outputs(prefix)
        raise
    _print_summary(meta, folder, issues)
    return meta


def expected_bytes(image_bytes, shards, page, header):
    """Upper estimate of the MindRecord files of a conversion: the image bytes (stored as they are),
    annotations (a few percent), and per shard its header and one page of padding."""
    return int(image_bytes * 1.1) + shards * (header + page)


def check_free_space(folder, needed):
    """DatasetError before any work when ``folder``'s file system has less than ``needed`` bytes free."""
    free = shutil.disk_usage(folder).free
    if free < needed:
        raise DatasetError(f"not enough free space in {folder} for the MindRecord files: about "
                           f"{needed / 2 ** 20:.0f} MB needed, {free / 2 ** 20:.0f} MB free")


@contextlib.contextmanager
def _writing(folder):
    """Turn a failed write (a full disk, a lost mount, MindSpore's multi-line C++ errors) into one
    line naming the folder."""
    try:
        yield
    except (RuntimeError, OSError) as e:
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        raise DatasetError(f"cannot write the MindRecord files in {folder}: "
                           f"{lines[0] if lines else type(e).__name__}") from None


def _shard_order(file_name):
    digits = re.search(r"(\d*)$", file_name).group(1)
    return int(digits) if digits else -1


def _write_rows(path, shards, page, header, tasks, options, workers, issues, split):
    """Write all rows with FileWriter; returns (rows written, instances, image bytes, image ids)."""
    # deferred: MindSpore takes seconds to import, and the rest of this module does not need it
    import mindspore.dataset as ds
    from mindspore.mindrecord import FileWriter

    folder = os.path.dirname(os.path.dirname(path))  # path lies in the hidden partial folder
    with _writing(folder):
        writer = FileWriter(path, shard_num=shards, overwrite=True)
        writer.set_page_size(page)
        writer.set_header_size(header)
        writer.add_schema(RECORD_SCHEMA, "maskrcnn_coco")
    progress = Progress(len(tasks), f"convert {split}", unit="images")
    written = instances = image_bytes = 0
    batch, image_ids = [], []
    for row, row_issues in _rows(tasks, options, workers):
        issues.extend(row_issues)
        if row is not None:
            batch.append(row)
            written += 1
            image_ids.append(row["image_id"])
            instances += row["num_instances"]
            image_bytes += len(row["image"])
            if len(batch) == WRITE_BATCH:
                with _writing(folder):
                    writer.write_raw_data(batch)
                batch = []
        progress.update()
    with _writing(folder):
        if batch:
            writer.write_raw_data(batch)
        if written:
            writer.commit()
    progress.close()
    if written:
        # FileWriter drops rows that fail its schema check with only a log line: count what is stored.
        stored = ds.MindDataset(path if shards == 1 else f"{path}0", columns_list=["image_id"]).get_dataset_size()
        if stored != written:
            raise DatasetError(f"{path}: FileWriter stored {stored} of {written} rows (see the MindSpore log)")
    return written, instances, image_bytes, image_ids


def _check_class_map_conflict(folder, class_map, is_training, ann_file):
    """Refuse to mix two data sets with different categories in one mindrecord_dir."""
    path = classes_path(folder)
    if not os.path.isfile(path):
        return
    try:
        existing = load_class_map(folder)
    except DatasetError:
        return  # malformed: it is rewritten at the end of this conversion
    other = os.path.join(folder, (EVAL_FILE if is_training else TRAIN_FILE))
    if existing != class_map and read_meta(other) is not None:
        raise DatasetError(f"the categories of {ann_file} differ from {path}, written for the "
                        f"{split_name(not is_training)} split of another annotation file; use another "
                        "mindrecord_dir or delete this one")


def _print_summary(meta, folder, issues):
    record_bytes = sum(os.path.getsize(os.path.join(folder, f)) for f in meta["files"] + meta["index_files"])
    ratio = record_bytes / max(meta["image_bytes"], 1)
    lines = [f"convert {meta['split']}: {meta['num_images']} images, {meta['num_instances']} instances, "
             f"{len(meta['files'])} shard(s), {record_bytes / 2 ** 20:.1f} MB ({ratio:.3f} x image bytes)"]
    if issues.counts:
        lines.append(f"convert {meta['split']}: skipped or repaired input:")
        lines.extend(issues.summary_lines())
    print("\n".join(lines), flush=True)


def ensure_mindrecord(cfg, is_training, wait_timeout_s=24 * 3600):
    """Path of the first shard of the training/evaluation MindRecord, converting it if needed.

    In a distributed run (``cfg.run_distribute``) only rank 0 converts; the other ranks wait (up to
    ``wait_timeout_s``) until its conversion is complete and up to date. Raises DatasetError (one
    line) on unusable input.
    """
    path = first_shard_path(cfg, is_training)
    if path is not None:
        return path
    if cfg.run_distribute and cfg.rank_id != 0:
        return _wait_for_conversion(cfg, is_training, wait_timeout_s)
    prefix = mindrecord_prefix(cfg, is_training)
    meta = read_meta(prefix)
    if meta is not None:
        print(f"{prefix}: converting again: {stale_reason(meta, cfg, is_training)}", flush=True)
    convert_coco_to_mindrecord(cfg, is_training)
    return mindrecord_path(cfg, is_training)


def _wait_for_conversion(cfg, is_training, timeout_s):
    prefix = mindrecord_prefix(cfg, is_training)
    start = time.monotonic()
    last_note = start
    print(f"rank {cfg.rank_id}: waiting for rank 0 to convert {prefix}", flush=True)
    while True:
        path = first_shard_path(cfg, is_training)
        if path is not None:
            return path
        now = time.monotonic()
        if now - start > timeout_s:
            raise DatasetError(f"rank {cfg.rank_id}: {prefix} did not appear within {timeout_s:.0f} s")
        if now - last_note > 300:
            last_note = now
            print(f"rank {cfg.rank_id}: still waiting for {prefix} ({now - start:.0f} s)", file=sys.stderr, flush=True)
        time.sleep(WAIT_POLL_S)
