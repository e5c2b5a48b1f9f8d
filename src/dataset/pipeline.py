"""The MindSpore input pipeline: MindRecord rows -> fixed-shape batches for the network.

Training batches: img (B, 3, H, W) float32, img_metas (B, 4) float32, gt_bboxes (B, G, 4) float32,
gt_labels (B, G) int32, gt_valids (B, G) bool, gt_masks (B, G, L) uint8 (packed canvas masks).
Evaluation batches: img, img_metas, image_id (B,) int32, orig_hw (B, 2) float32.
See transforms.py for the meaning of each column.
"""
import os

import mindspore.dataset as ds

from src.dataset.errors import DatasetError
from src.dataset.transforms import EvalTransform, TrainTransform

TRAIN_INPUT_COLUMNS = ["image", "num_instances", "boxes", "labels", "iscrowd", "mask_lengths", "masks"]
# what a batch holds, in the network's input order (train.py, eval.py and postprogress.py read these)
TRAIN_COLUMNS = ["img", "img_metas", "gt_bboxes", "gt_labels", "gt_valids", "gt_masks"]
EVAL_INPUT_COLUMNS = ["image", "image_id", "height", "width"]
EVAL_COLUMNS = ["img", "img_metas", "image_id", "orig_hw"]


def create_maskrcnn_dataset(cfg, mindrecord_file, batch_size, is_training, rank_id=0, rank_size=1,
                            num_parallel_workers=2):
    """A batched ``mindspore.dataset`` over one MindRecord conversion.

    Args:
        cfg: the config (image size, augmentation, max_instance_count, seed, ...).
        mindrecord_file: first shard (``ensure_mindrecord`` returns it).
        batch_size: images per batch; the last incomplete batch is dropped (fixed graph shapes).
        is_training: training columns, shuffling and augmentation; else evaluation columns, file order.
        rank_id, rank_size: this process's share of the rows in data-parallel training.
        num_parallel_workers: reader and map worker threads.
    Raises:
        DatasetError if the file is missing or holds fewer than ``batch_size`` images for this rank.
    """
    if not os.path.isfile(mindrecord_file):
        raise DatasetError(f"MindRecord file not found: {mindrecord_file}")
    if num_parallel_workers < 1:
        raise DatasetError(f"num_parallel_workers must be >= 1, got {num_parallel_workers}")
    sharding = {"num_shards": rank_size, "shard_id": rank_id} if rank_size > 1 else {}
    input_columns = TRAIN_INPUT_COLUMNS if is_training else EVAL_INPUT_COLUMNS
    output_columns = TRAIN_COLUMNS if is_training else EVAL_COLUMNS
    dataset = ds.MindDataset(mindrecord_file, columns_list=input_columns, shuffle=is_training,
                             num_parallel_workers=num_parallel_workers, **sharding)
    num_rows = dataset.get_dataset_size()
    if num_rows < batch_size:
        raise DatasetError(f"{mindrecord_file} holds {num_rows} image(s) for rank {rank_id} of {rank_size}, "
                        f"fewer than the batch size {batch_size}")
    transform = TrainTransform(cfg, seed=cfg.seed * 1000 + rank_id) if is_training else EvalTransform(cfg)
    # Threads, not processes: cv2 and numpy release the GIL, and Python multiprocessing measured
    # slower here (see the MindSpore notes).
    dataset = dataset.map(operations=transform, input_columns=input_columns, output_columns=output_columns,
                          num_parallel_workers=num_parallel_workers, python_multiprocessing=False)
    dataset = dataset.project(output_columns)
    return dataset.batch(batch_size, drop_remainder=True, num_parallel_workers=num_parallel_workers)
