"""Per-image detections -> COCO result files and metrics, for eval.py (network outputs) and
postprogress.py (raw outputs of an exported model).

Turning one image's detections into COCO results (pasting up to 100 masks into the full image,
thresholding, RLE encoding) is host work that can take longer than the network on a GPU. With
``workers`` > 0 it runs in worker processes while the caller goes on with the next batch; results
are kept in the order the images were added, so the output is the same as with ``workers`` = 0.
The masks travel through shared memory: pickling 20 MB of mask probabilities per image through a
pipe cost as much as the work itself.
"""
import collections
import os
from multiprocessing import shared_memory

import numpy as np

from src.evaluation.boundary_iou import boundary_ap
from src.evaluation.coco_metrics import evaluate_coco
from src.evaluation.coco_results import detections_to_coco, write_coco_results
from src.utils.worker_pool import worker_pool

# images handed to the workers and not yet collected, per worker: bounds the memory held by
# pending masks (100 x 224 x 224 float32 = 20 MB per image at the COCO config)
PENDING_PER_WORKER = 2


def image_results(image_id, det, img_meta, orig_hw, label_to_category, mask_threshold):
    """(bbox results, segm results) of one image (``detections_to_coco`` on a detection dict)."""
    return detections_to_coco(int(image_id), det["boxes"], det["scores"], det["labels"], det["valid"], det["masks"],
                              img_meta, orig_hw, label_to_category, mask_threshold=mask_threshold)


_attached = {}  # in a worker: the shared-memory blocks it has opened, by name


def shared_image_results(image_id, det, block, img_meta, orig_hw, label_to_category, mask_threshold):
    """``image_results`` with the masks in the shared-memory block ``block`` = (name, shape, dtype)."""
    name, shape, dtype = block
    if name not in _attached:
        _attached[name] = shared_memory.SharedMemory(name=name)
    masks = np.ndarray(shape, dtype, buffer=_attached[name].buf)
    return image_results(image_id, dict(det, masks=masks), img_meta, orig_hw, label_to_category, mask_threshold)


class CocoResultCollector:
    """Collects per-image detections as COCO results, then writes and scores them.

    Args:
        label_to_category: {contiguous label: COCO category id}; mask_threshold: mask probability threshold.
        workers: processes that turn detections into results while the caller goes on (0: in the
            calling process, when ``add`` is called).
    """

    def __init__(self, label_to_category, mask_threshold, workers=0):
        self.label_to_category = label_to_category
        self.mask_threshold = mask_threshold
        self.workers = workers
        self.bbox = []
        self.segm = []
        self.images = 0
        self.without_detections = 0
        # spawn: the caller runs MindSpore, whose busy runtime threads a forked child would copy
        self._pool = worker_pool(workers, "spawn") if workers > 0 else None
        self._pending = collections.deque()  # (shared-memory block, async result) per image, in order
        self._free_blocks = []
        self._blocks = []

    def add(self, image_id, det, img_meta, orig_hw):
        """det: {boxes (D, 4), scores (D,), labels (D,), valid (D,), masks (D, M, M)} of one image;
        img_meta (4,) = (h, w, scale_h, scale_w) on the canvas; orig_hw (2,) of the original image."""
        if self._pool is None:
            self._keep(image_results(image_id, det, img_meta, orig_hw, self.label_to_category, self.mask_threshold))
            return
        masks = np.ascontiguousarray(det["masks"])
        block = self._block(masks.nbytes)
        np.ndarray(masks.shape, masks.dtype, buffer=block.buf)[...] = masks
        args = (image_id, dict(det, masks=None), (block.name, masks.shape, masks.dtype.str), img_meta, orig_hw,
                self.label_to_category, self.mask_threshold)
        self._pending.append((block, self._pool.apply_async(shared_image_results, args)))
        while len(self._pending) > PENDING_PER_WORKER * self.workers:
            self._collect_oldest()

    def _block(self, nbytes):
        """A free shared-memory block of at least ``nbytes`` (blocks are reused: one per pending image)."""
        for i, block in enumerate(self._free_blocks):
            if block.size >= nbytes:
                return self._free_blocks.pop(i)
        block = shared_memory.SharedMemory(create=True, size=max(nbytes, 1))
        self._blocks.append(block)
        return block

    def _collect_oldest(self):
        block, result = self._pending.popleft()
        self._keep(result.get())
        self._free_blocks.append(block)

    def _keep(self, results):
        boxes, segms = results
        self.bbox.extend(boxes)
        self.segm.extend(segms)
        self.images += 1
        self.without_detections += int(not boxes)

    def wait(self):
        """Collect every pending image, stop the workers and free the shared memory."""
        while self._pending:
            self._collect_oldest()
        if self._pool is not None:
            self._pool.close()
            self._pool.join()
            self._pool = None
        for block in self._blocks:
            block.close()
            block.unlink()
        self._blocks, self._free_blocks = [], []

    def finish(self, coco_gt, image_ids, out_dir, with_boundary_ap):
        """Write ``results.pkl.{bbox,segm}.json`` and the tables into out_dir; returns the stats dict
        {'bbox': (12,), 'segm': (12,)[, 'boundary': (12,)]}."""
        self.wait()
        paths = write_coco_results(self.bbox, self.segm, out_dir, prefix="results.pkl")
        stats = evaluate_coco(coco_gt, paths, out_dir=out_dir, image_ids=image_ids)
        if with_boundary_ap:
            stats["boundary"] = boundary_ap(coco_gt, paths["segm"], image_ids=image_ids,
                                            summary_path=os.path.join(out_dir, "boundary_ap.txt"))
            print(f"Boundary AP (segm, dilation 0.02): {stats['boundary'][0]:.4f}", flush=True)
        print(f"bbox AP {stats['bbox'][0]:.4f}  segm AP {stats['segm'][0]:.4f}  "
              f"({self.images} images, {self.without_detections} without detections; results in {out_dir})",
              flush=True)
        return stats
