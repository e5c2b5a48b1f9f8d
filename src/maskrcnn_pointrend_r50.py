"""Mask R-CNN R50-FPN with a PointRend (or the standard) mask branch: the whole network.

Training (``set_train(True)``) returns the six loss components; inference returns detections and
their masks. Both run in GRAPH_MODE with fixed shapes taken from the config.
"""
import numpy as np

import mindspore as ms
from mindspore import nn, ops

from src.maskrcnn.anchor_generator import multi_level_anchors
from src.maskrcnn.bbox_assign_sample_stage2 import BboxAssignSampleForRcnn, gather_rows
from src.maskrcnn.box_postprocess import DetectionPostprocess
from src.maskrcnn.feature_sampler import LevelLayout, MultiLevelRoIAlign, flatten_levels
from src.maskrcnn.fpn_neck import FeatPyramidNeck
from src.maskrcnn.proposal_generator import Proposal
from src.maskrcnn.rcnn_cls import RcnnCls, rcnn_box_losses
from src.maskrcnn.rcnn_mask import RcnnMask, select_class, standard_mask_loss
from src.maskrcnn.resnet50 import ResNetFea
from src.maskrcnn.rpn import RPN, RpnLoss
from src.pointrend.coarse_mask_head import CoarseMaskHead
from src.pointrend.mask_branch import PointRendMaskBranch
from src.pointrend.point_head import StandardPointHead
from src.pointrend.sampling_points import regular_grid_points

LOSS_NAMES = ("rpn_cls", "rpn_reg", "rcnn_cls", "rcnn_reg", "mask_coarse", "mask_point")


def batch_index_of(batch, per_image):
    """(batch * per_image,) int32 image index of each flattened row."""
    return ms.Tensor(np.repeat(np.arange(batch, dtype=np.int32), per_image))


class MaskRcnnPointRend(nn.Cell):
    """Args:
        cfg: loaded config (``load_config``); ``cfg.num_classes`` must be set (background included).
        batch_size: images per call (``cfg.batch_size`` for training, ``cfg.test_batch_size`` for eval).

    Training inputs: img (B, 3, H, W) float32; img_metas (B, 4) = (h, w, scale_h, scale_w) of the
        resized image on the canvas; gt_bboxes (B, G, 4); gt_labels (B, G) int32 (1..num_classes-1);
        gt_valids (B, G) bool; gt_masks (B, G, S, S) float32 crops of each mask inside its box.
        Output: the six losses of ``LOSS_NAMES``.
    Inference inputs: img, img_metas. Output: boxes (B, D, 4), scores (B, D), labels (B, D) int32,
        valid (B, D) bool, masks (B, D, M, M) probabilities inside each box (M = 224 for PointRend,
        mask_shape for the standard head).
    """

    def __init__(self, cfg, batch_size):
        super().__init__()
        if cfg.num_classes < 2:
            raise ValueError("num_classes must be set (background + classes) before building the network")
        self.num_classes = cfg.num_classes
        self.batch_size = batch_size
        self.use_pointrend = cfg.mask_head == "pointrend"
        self.backbone = ResNetFea(cfg.resnet_block, cfg.resnet_in_channels, cfg.resnet_out_channels,
                                  cfg.backbone_norm, cfg.freeze_at)
        self.fpn_ncek = FeatPyramidNeck(cfg.fpn_in_channels, cfg.fpn_out_channels, cfg.fpn_num_outs)
        self.rpn_with_loss = RPN(cfg.rpn_in_channels, cfg.rpn_feat_channels, cfg.num_anchors,
                                 cfg.rpn_cls_out_channels)
        self.rcnn_cls = RcnnCls(cfg, self.num_classes)
        self.rcnn_mask = RcnnMask(cfg, self.num_classes)
        if self.use_pointrend:
            self.mask_coarse_head = CoarseMaskHead(cfg.fpn_out_channels, cfg.coarse_conv_dim, cfg.coarse_fc_dim,
                                                   cfg.coarse_num_fc, cfg.coarse_out_resolution, self.num_classes)
            self.mask_point_head = StandardPointHead(cfg.fpn_out_channels, cfg.point_fc_dim, cfg.point_num_fc,
                                                     self.num_classes)

        anchors = multi_level_anchors(cfg.feature_shapes, cfg.anchor_strides, cfg.anchor_scales, cfg.anchor_ratios)
        num_roi_levels = len(cfg.roi_align_featmap_strides)
        roi_shapes = cfg.feature_shapes[:num_roi_levels]
        self.num_roi_levels = num_roi_levels
        self.rpn_loss = RpnLoss(cfg, np.concatenate(anchors, 0))
        self.proposal_train = Proposal(cfg, anchors, training=True)
        self.proposal_test = Proposal(cfg, anchors, training=False)
        self.sampler_stage2 = BboxAssignSampleForRcnn(cfg)
        roi = cfg.roi_layer
        strides = cfg.roi_align_featmap_strides
        self.roi_align = MultiLevelRoIAlign(roi_shapes, strides, batch_size, roi.out_size, roi.sample_num,
                                            cfg.roi_align_finest_scale)
        self.postprocess = DetectionPostprocess(cfg, self.num_classes, self.proposal_test.num_proposals)
        if self.use_pointrend:
            self.mask_branch = PointRendMaskBranch(cfg, LevelLayout(roi_shapes, batch_size))
        else:
            self.roi_align_mask = MultiLevelRoIAlign(roi_shapes, strides, batch_size, roi.mask_out_size,
                                                     roi.sample_num, cfg.roi_align_finest_scale)
            self.mask_side = cfg.mask_shape[0]
            self.mask_sample_num = roi.sample_num
            self.mask_grid = ms.Tensor(regular_grid_points(self.mask_side * roi.sample_num))

        num_candidates = cfg.max_instance_count + self.proposal_train.num_proposals
        slots = min(cfg.num_expected_total_stage2, num_candidates)
        self.num_pos_slots = min(cfg.num_expected_pos_stage2, slots)
        self.train_roi_index = batch_index_of(batch_size, slots)
        self.pos_roi_index = batch_index_of(batch_size, self.num_pos_slots)
        self.test_roi_index = batch_index_of(batch_size, self.proposal_test.num_proposals)
        self.det_index = batch_index_of(batch_size, self.postprocess.max_per_img)
        self.freeze(cfg)

    def freeze(self, cfg):
        """Stop gradients by module: backbone stages below ``freeze_at``; with ``train_heads_only``
        everything but the mask heads (the original's schedule); the unused mask head always."""
        frozen = []
        for cells in self.backbone.stage_cells()[:cfg.freeze_at]:
            frozen.extend(cells)
        if cfg.train_heads_only:
            frozen.extend([self.backbone, self.fpn_ncek, self.rpn_with_loss, self.rcnn_cls])
        if self.use_pointrend:
            frozen.append(self.rcnn_mask)
        for cell in frozen:
            for param in cell.get_parameters():
                param.requires_grad = False

    def features(self, img):
        """(B, 3, H, W) -> FPN pyramid (P2..P6) and the flat table of the RoI levels."""
        pyramid = self.fpn_ncek(self.backbone(img))
        return pyramid, flatten_levels(pyramid[:self.num_roi_levels])

    def construct(self, img, img_metas, gt_bboxes=None, gt_labels=None, gt_valids=None, gt_masks=None):
        if self.training:
            return self.train_losses(img, img_metas, gt_bboxes, gt_labels, gt_valids, gt_masks)
        return self.detect(img, img_metas)

    def train_losses(self, img, img_metas, gt_bboxes, gt_labels, gt_valids, gt_masks):
        pyramid, table = self.features(img)
        rpn_cls, rpn_reg = self.rpn_with_loss(pyramid)
        loss_rpn_cls, loss_rpn_reg = self.rpn_loss(rpn_cls, rpn_reg, gt_bboxes, gt_valids)
        proposals, proposal_valid = self.proposal_train(rpn_cls, rpn_reg, img_metas)
        rois, labels, valid, bbox_targets, gt_index = self.sampler_stage2(proposals, proposal_valid, gt_bboxes,
                                                                          gt_labels, gt_valids)
        roi_feats = self.roi_align(table, ops.concat([ops.cast(self.train_roi_index, ms.float32).reshape(-1, 1),
                                                      rois.reshape(-1, 4)], 1))
        cls_logits, deltas = self.rcnn_cls(roi_feats)
        loss_cls, loss_reg = rcnn_box_losses(cls_logits, deltas, labels.reshape(-1), valid.reshape(-1),
                                             bbox_targets.reshape(-1, 4), self.num_classes)

        # the mask branch trains on the leading slots, which hold the sampled positives
        n = self.num_pos_slots
        pos_rois = rois[:, :n].reshape(-1, 4)
        pos_labels = labels[:, :n].reshape(-1)
        pos_weights = (pos_labels > 0).astype(ms.float32)
        pos_gt_masks = gather_rows(gt_masks, gt_index[:, :n])
        pos_gt_masks = pos_gt_masks.reshape((-1,) + pos_gt_masks.shape[2:])
        pos_gt_boxes = gather_rows(gt_bboxes, gt_index[:, :n]).reshape(-1, 4)
        if self.use_pointrend:
            loss_mask, loss_point = self.mask_branch.losses(self.mask_coarse_head, self.mask_point_head, table,
                                                            pos_rois, self.pos_roi_index, pos_labels, pos_weights,
                                                            pos_gt_masks, pos_gt_boxes)
        else:
            mask_feats = self.roi_align_mask(table, ops.concat(
                [ops.cast(self.pos_roi_index, ms.float32).reshape(-1, 1), pos_rois], 1))
            loss_mask = standard_mask_loss(self.rcnn_mask(mask_feats), pos_labels, pos_weights, pos_gt_masks,
                                           pos_gt_boxes, pos_rois, self.mask_grid, self.mask_side,
                                           self.mask_sample_num)
            loss_point = ops.zeros((), ms.float32)
        return loss_rpn_cls, loss_rpn_reg, loss_cls, loss_reg, loss_mask, loss_point

    def detect(self, img, img_metas):
        pyramid, table = self.features(img)
        rpn_cls, rpn_reg = self.rpn_with_loss(pyramid)
        proposals, proposal_valid = self.proposal_test(rpn_cls, rpn_reg, img_metas)
        rois = ops.concat([ops.cast(self.test_roi_index, ms.float32).reshape(-1, 1), proposals.reshape(-1, 4)], 1)
        cls_logits, deltas = self.rcnn_cls(self.roi_align(table, rois))
        boxes, scores, labels, valid = self.postprocess(proposals, proposal_valid, cls_logits, deltas, img_metas)
        flat_boxes = boxes.reshape(-1, 4)
        flat_labels = labels.reshape(-1)
        if self.use_pointrend:
            masks = self.mask_branch.predict(self.mask_coarse_head, self.mask_point_head, table, flat_boxes,
                                             self.det_index, flat_labels)
        else:
            det_rois = ops.concat([ops.cast(self.det_index, ms.float32).reshape(-1, 1), flat_boxes], 1)
            masks = ops.sigmoid(select_class(self.rcnn_mask(self.roi_align_mask(table, det_rois)), flat_labels))
        masks = masks.reshape((boxes.shape[0], boxes.shape[1]) + masks.shape[1:])
        return boxes, scores, labels, valid, masks
