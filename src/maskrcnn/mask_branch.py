"""The standard Mask R-CNN mask branch: RoIAlign, the 28x28 head, its loss and its masks.

``PointRendMaskBranch`` (src/pointrend/mask_branch.py) has the same interface, so the network
picks one in ``__init__`` and calls ``losses`` / ``predict`` without knowing which.
"""
import mindspore as ms
from mindspore import nn, ops

from src.layers.roi_align import MultiLevelRoIAlign, rois_with_index
from src.layers.tensor_utils import select_class
from src.maskrcnn.mask_loss import mask_rcnn_loss
from src.maskrcnn.mask_targets import roi_mask_targets, target_sampling


class StandardMaskBranch(nn.Cell):
    """Args:
        cfg: config; roi_shapes: [(H_l, W_l)] of the pooled levels; batch_size: images per call;
        head: the network's ``RcnnMask``. It is kept in a tuple, not registered as a child cell, so
            that its parameters keep the network-level names of the model zoo (``rcnn_mask.*``).
    """

    def __init__(self, cfg, roi_shapes, batch_size, head):
        super().__init__()
        self.heads = (head,)
        roi = cfg.roi_layer
        self.roi_align = MultiLevelRoIAlign(roi_shapes, cfg.roi_align_featmap_strides, batch_size,
                                            roi.mask_out_size, roi.sample_num, cfg.roi_align_finest_scale,
                                            roi.aligned, roi.max_sample_num, cfg.gather_chunk_mib)
        self.output_side = cfg.mask_shape[0]
        self.canvas_hw = (cfg.img_height, cfg.img_width)
        self.target_sampling = target_sampling(cfg)

    def losses(self, table, rois, batch_index, labels, weights, gt_masks, instance, image_hw):
        """Mask loss on the positive RoIs (arguments as ``PointRendMaskBranch.losses``).

        Returns:
            (loss_mask, loss_point) scalars; loss_point is 0 (no point head).
        """
        head, = self.heads
        logits = head(self.roi_align(table, rois_with_index(batch_index, rois)))
        targets = roi_mask_targets(gt_masks, instance, self.canvas_hw, image_hw, rois, self.output_side,
                                   *self.target_sampling)
        loss = mask_rcnn_loss(logits, labels, weights, targets)
        return loss, ops.zeros((), ms.float32)

    def predict(self, table, boxes, batch_index, classes):
        """Args: boxes (R, 4); batch_index (R,) int32; classes (R,) int32 predicted classes.
        Returns: (R, output_side, output_side) mask probabilities inside each box."""
        head, = self.heads
        logits = head(self.roi_align(table, rois_with_index(batch_index, boxes)))
        return ops.sigmoid(select_class(logits, classes))
