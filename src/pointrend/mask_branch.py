"""PointRend mask branch: coarse prediction, point losses (training) and adaptive subdivision
(inference), for the heads defined in coarse_mask_head.py and point_head.py.

Same interface as Mask R-CNN's ``StandardMaskBranch`` (src/maskrcnn/mask_branch.py).
"""
import mindspore as ms
from mindspore import nn, ops

from src.layers.feature_table import LevelLayout
from src.layers.point_sample import LevelPointSampler, box_points_to_image, patch_grid_points, point_sample
from src.layers.tensor_utils import permute, select_class
from src.maskrcnn.mask_loss import mask_rcnn_loss, masked_bce_loss
from src.maskrcnn.mask_targets import gt_mask_at_points, roi_mask_targets, target_sampling
from src.pointrend.point_selection import training_point_counts, training_points, uncertain_grid_points


class PointRendMaskBranch(nn.Cell):
    """Args:
        cfg: config; layout: ``LevelLayout`` of the flat FPN table (P2..P5);
        coarse_head: the network's ``CoarseMaskHead``; point_head: its ``StandardPointHead``. They are
            kept in a tuple, not registered as child cells, so that their parameters keep the
            network-level names (``mask_coarse_head.*`` / ``mask_point_head.*`` in checkpoints).
    """

    def __init__(self, cfg, layout, coarse_head, point_head):
        super().__init__()
        self.heads = (coarse_head, point_head)
        level = cfg.roi_align_featmap_strides.index(cfg.point_feature_stride)
        self.fine_sampler = LevelPointSampler(layout, level, cfg.point_feature_stride)
        # inference samples the point head's projection of the fine level (see fine_projection),
        # a table of that level's rows only
        height, width = layout.heights[level], layout.widths[level]
        self.fine_rows = (layout.starts[level], layout.starts[level] + layout.batch_size * height * width)
        self.projected_sampler = LevelPointSampler(LevelLayout([(height, width)], layout.batch_size), 0,
                                                   cfg.point_feature_stride)
        self.in_side = cfg.coarse_in_resolution
        self.out_side = cfg.coarse_out_resolution
        # the coarse head's 2x2/2 conv takes its input patch by patch
        self.patch = self.in_side // self.out_side
        self.coarse_grid = ms.Tensor(patch_grid_points(self.in_side, self.patch))
        self.canvas_hw = (cfg.img_height, cfg.img_width)
        self.target_sampling = target_sampling(cfg)
        self.num_candidates, self.num_uncertain, self.num_random = training_point_counts(
            cfg.train_num_points, cfg.oversample_ratio, cfg.importance_sample_ratio)
        self.upsample = ops.ResizeBilinearV2(align_corners=False, half_pixel_centers=True)
        # detectron2 skips the point head while the upsampled map has no more than
        # num_points / 4 cells (the next step re-predicts all of them anyway).
        self.subdivision_num_points = cfg.subdivision_num_points
        side = self.out_side
        predicts = []
        for step in range(cfg.subdivision_steps):
            side *= 2
            predicts.append(not (self.subdivision_num_points >= 4 * side * side and step < cfg.subdivision_steps - 1))
        self.predict_steps = tuple(predicts)
        self.output_side = side

    def coarse_logits(self, table, rois, batch_index):
        """Coarse head on fine features sampled on a regular grid in each RoI.

        Args: table (T, C) flat FPN features; rois (R, 4); batch_index (R,) int32.
        Returns: (R, num_classes, out_side, out_side).
        """
        coarse_head = self.heads[0]
        r = rois.shape[0]
        feats = self.fine_sampler(table, batch_index, box_points_to_image(rois, self.coarse_grid))  # (R, S*S, C)
        return coarse_head(feats.reshape(r, self.out_side, self.out_side, self.patch, self.patch, feats.shape[2]))

    @staticmethod
    def channels_first_samples(sampler, table, batch_index, image_points, low_memory=True):
        """``sampler``'s features at image points (R, P, 2), laid out for the point head: (R, C, P)
        (``low_memory``: see ``permute``)."""
        return permute(sampler(table, batch_index, image_points), (0, 2, 1), low_memory)

    def losses(self, table, rois, batch_index, labels, weights, gt_masks, instance, image_hw):
        """Coarse-mask and point losses on the positive RoIs.

        Args:
            table: (T, C) flat FPN features; rois: (R, 4); batch_index: (R,) int32;
            labels: (R,) int32 GT classes; weights: (R,) float32 (1 = valid positive);
            gt_masks: (M, L) uint8 packed canvas masks of the batch's GT instances; instance: (R,)
                int32 each RoI's row in it; image_hw: (R, 2) float32 its image's resized size
                (see ``maskrcnn.mask_targets``).
        Returns:
            (loss_coarse, loss_point) scalars.
        """
        point_head = self.heads[1]
        r = rois.shape[0]
        coarse = self.coarse_logits(table, rois, batch_index)
        targets = roi_mask_targets(gt_masks, instance, self.canvas_hw, image_hw, rois, self.out_side,
                                   *self.target_sampling)
        loss_coarse = mask_rcnn_loss(coarse, labels, weights, targets)

        class_coarse = ops.expand_dims(select_class(coarse, labels), 1)  # (R, 1, h, w)
        candidates = ops.rand((r, self.num_candidates, 2))
        extra = ops.rand((r, self.num_random, 2))
        points = ops.stop_gradient(training_points(ops.stop_gradient(class_coarse), candidates, extra,
                                                   self.num_uncertain))
        image_points = box_points_to_image(rois, points)
        fine = self.channels_first_samples(self.fine_sampler, table, batch_index, image_points)
        logits = point_head(fine, point_sample(coarse, points))  # (R, C, P)
        index = ops.broadcast_to(labels.reshape(r, 1, 1), (r, 1, logits.shape[2]))
        class_logits = ops.gather_elements(logits, 1, index)[:, 0]
        point_labels = ops.stop_gradient(gt_mask_at_points(gt_masks, instance, self.canvas_hw, image_points))
        return loss_coarse, masked_bce_loss(class_logits, point_labels, weights)

    def predict(self, table, boxes, batch_index, classes):
        """Adaptive subdivision of the predicted class only.

        Args: table (T, C) flat FPN features; boxes (R, 4); batch_index (R,) int32;
            classes (R,) int32 predicted classes.
        Returns: (R, output_side, output_side) mask probabilities inside each box.
        """
        point_head = self.heads[1]
        coarse = self.coarse_logits(table, boxes, batch_index)
        logits = ops.expand_dims(select_class(coarse, classes), 1)  # (R, 1, h, w)
        r = boxes.shape[0]
        begin, end = self.fine_rows
        projected = point_head.fine_projection(table[begin:end])  # (B * H * W, fc_dim)
        for predict in self.predict_steps:
            h, w = logits.shape[2] * 2, logits.shape[3] * 2
            logits = self.upsample(logits, (h, w))
            if predict:
                num_points = min(self.subdivision_num_points, h * w)
                index, points = uncertain_grid_points(logits[:, 0], num_points)
                fine = self.channels_first_samples(self.projected_sampler, projected, batch_index,
                                                   box_points_to_image(boxes, points), low_memory=False)
                refined = point_head.predict_class(fine, point_sample(coarse, points, low_memory=False), classes)
                flat = ops.tensor_scatter_elements(logits.reshape(r, h * w), index, refined, axis=1)
                logits = flat.reshape(r, 1, h, w)
        return ops.sigmoid(logits[:, 0])
