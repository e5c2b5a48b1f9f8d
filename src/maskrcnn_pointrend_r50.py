"""Mask R-CNN R50-FPN with a PointRend (or the standard) mask branch: the whole network.

Training (``set_train(True)``) returns the six loss components; inference returns detections and
their masks. Both run in GRAPH_MODE with fixed shapes taken from the config.
"""
import numpy as np

import mindspore as ms
from mindspore import nn, ops

from src.config import ConfigError
from src.layers.box_utils import box_offset_of
from src.layers.conv2d import resolve_conv_backward, set_conv_backward
from src.layers.feature_table import LevelLayout, flatten_levels
from src.layers.padding_mask import anchor_validity, padded_extent, padded_extent_masks
from src.layers.roi_align import MultiLevelRoIAlign, rois_with_index
from src.layers.tensor_utils import batch_index_of
from src.maskrcnn.anchor_generator import multi_level_anchors
from src.maskrcnn.bbox_assign_sample_stage2 import BboxAssignSampleForRcnn
from src.maskrcnn.box_postprocess import DetectionPostprocess
from src.maskrcnn.fpn_neck import FeatPyramidNeck
from src.maskrcnn.mask_branch import StandardMaskBranch
from src.maskrcnn.proposal_generator import Proposal
from src.maskrcnn.rcnn_cls import RcnnCls, rcnn_box_losses, refined_boxes
from src.maskrcnn.rcnn_mask import RcnnMask
from src.maskrcnn.resnet50 import ResNetFea
from src.maskrcnn.rpn import RPN, RpnLoss
from src.pointrend.coarse_mask_head import CoarseMaskHead
from src.pointrend.mask_branch import PointRendMaskBranch
from src.pointrend.point_head import StandardPointHead

LOSS_NAMES = ("rpn_cls", "rpn_reg", "rcnn_cls", "rcnn_reg", "mask_coarse", "mask_point")


class MaskRcnnPointRend(nn.Cell):
    """Args:
        cfg: loaded config (``load_config``); ``cfg.num_classes`` must be set (background included).
        batch_size: images per call (``cfg.batch_size`` for training, ``cfg.test_batch_size`` for eval).

    Training inputs: img (B, 3, H, W) float32; img_metas (B, 4) = (h, w, scale_h, scale_w) of the
        resized image on the canvas; gt_bboxes (B, G, 4); gt_labels (B, G) int32 (1..num_classes-1);
        gt_valids (B, G) bool; gt_masks (B, G, L) uint8 canvas masks packed 8 pixels per byte
        (``dataset.transforms.pack_bitmasks``, L = ceil(H * W / 8)).
        Output: the six losses of ``LOSS_NAMES``.
    Inference inputs: img, img_metas. Output: boxes (B, D, 4), scores (B, D), labels (B, D) int32,
        valid (B, D) bool, masks (B, D, M, M) probabilities inside each box (M = 224 for PointRend,
        mask_shape for the standard head).
    """

    def __init__(self, cfg, batch_size):
        super().__init__()
        if cfg.num_classes < 2:
            raise ConfigError("config key 'num_classes': set it (background included) or let the data set it "
                              "before building the network")
        self.num_classes = cfg.num_classes
        self.batch_size = batch_size
        self.backbone = ResNetFea(cfg.resnet_block, cfg.resnet_in_channels, cfg.resnet_out_channels,
                                  cfg.backbone_norm, cfg.freeze_at, cfg.stride_in_1x1, cfg.stem_pool_padding,
                                  cfg.resnet_block_type)
        self.fpn_ncek = FeatPyramidNeck(cfg.fpn_in_channels, cfg.fpn_out_channels, cfg.fpn_num_outs,
                                        cfg.fpn_upsample)
        self.rpn_with_loss = RPN(cfg.rpn_in_channels, cfg.rpn_feat_channels, cfg.num_anchors,
                                 cfg.rpn_cls_out_channels)
        self.rcnn_cls = RcnnCls(cfg, self.num_classes)
        # The standard head exists with both mask branches, so that the model-zoo Mask R-CNN
        # checkpoint loads key for key; PointRend leaves it unused and frozen.
        self.rcnn_mask = RcnnMask(cfg, self.num_classes)
        use_pointrend = cfg.mask_head == "pointrend"
        if use_pointrend:
            self.mask_coarse_head = CoarseMaskHead(cfg.fpn_out_channels, cfg.coarse_conv_dim, cfg.coarse_fc_dim,
                                                   cfg.coarse_num_fc, cfg.coarse_out_resolution, self.num_classes)
            self.mask_point_head = StandardPointHead(cfg.fpn_out_channels, cfg.point_fc_dim, cfg.point_num_fc,
                                                     self.num_classes)

        anchors = multi_level_anchors(cfg.feature_shapes, cfg.anchor_strides, cfg.anchor_scales, cfg.anchor_ratios,
                                      cfg.anchor_style)
        self.num_roi_levels = len(cfg.roi_align_featmap_strides)
        roi_shapes = cfg.feature_shapes[:self.num_roi_levels]
        self.rpn_loss = RpnLoss(cfg, np.concatenate(anchors, 0))
        self.proposal_train = Proposal(cfg, anchors, training=True)
        self.proposal_test = Proposal(cfg, anchors, training=False)
        self.sampler_stage2 = BboxAssignSampleForRcnn(cfg)
        self.roi_align = MultiLevelRoIAlign(roi_shapes, cfg.roi_align_featmap_strides, batch_size,
                                            cfg.roi_layer.out_size, cfg.roi_layer.sample_num,
                                            cfg.roi_align_finest_scale, cfg.roi_layer.aligned,
                                            cfg.roi_layer.max_sample_num, cfg.gather_chunk_mib, channels_last=True)
        self.postprocess = DetectionPostprocess(cfg, self.num_classes, self.proposal_test.num_proposals)
        if use_pointrend:
            self.mask_branch = PointRendMaskBranch(cfg, LevelLayout(roi_shapes, batch_size), self.mask_coarse_head,
                                                   self.mask_point_head)
        else:
            self.mask_branch = StandardMaskBranch(cfg, roi_shapes, batch_size, self.rcnn_mask)

        num_candidates = cfg.max_instance_count + self.proposal_train.num_proposals
        slots = min(cfg.num_expected_total_stage2, num_candidates)
        self.num_pos_slots = min(cfg.num_expected_pos_stage2, slots)
        self.train_roi_index = batch_index_of(batch_size, slots)
        self.pos_roi_index = batch_index_of(batch_size, self.num_pos_slots)
        # first row of each image's GT masks in the batch's (B * G, L) mask table
        self.gt_mask_offset = ms.Tensor(np.arange(batch_size, dtype=np.int32).reshape(-1, 1) * cfg.max_instance_count)
        self.test_roi_index = batch_index_of(batch_size, self.proposal_test.num_proposals)
        self.det_index = batch_index_of(batch_size, self.postprocess.max_per_img)
        self.freeze(cfg.freeze_at, cfg.train_heads_only, unused=[self.rcnn_mask] if use_pointrend else [])
        set_conv_backward(self, *resolve_conv_backward(cfg.conv_backward, cfg.device_target, cfg.conv_taps_min_mib))
        self.size_divisibility = cfg.size_divisibility
        self.canvas_hw = (cfg.img_height, cfg.img_width)
        self.mask_strides = (2,) + tuple(cfg.anchor_strides)  # the stem's stride, then P2..P6
        self.num_anchors = cfg.num_anchors
        self.train_on_pred_boxes = cfg.train_on_pred_boxes
        self.box_beta = cfg.rcnn_smooth_l1_beta
        self.box_coder = (tuple(cfg.rcnn_target_means), tuple(cfg.rcnn_target_stds), box_offset_of(cfg.box_convention))

    def freeze(self, freeze_at, train_heads_only, unused):
        """Stop gradients by module: backbone stages below ``freeze_at``; with ``train_heads_only``
        everything but the mask heads (the original's schedule); the ``unused`` cells always."""
        frozen = list(unused)
        for cells in self.backbone.stage_cells()[:freeze_at]:
            frozen.extend(cells)
        if train_heads_only:
            frozen.extend([self.backbone, self.fpn_ncek, self.rpn_with_loss, self.rcnn_cls])
        for cell in frozen:
            for param in cell.get_parameters():
                param.requires_grad = False

    def features(self, img, img_metas, padded_extent_only=False):
        """(B, 3, H, W) -> FPN pyramid (P2..P6), the flat table of the RoI levels, and with
        ``padded_extent_only`` each image's padded extent (``size_divisibility``): which anchors lie
        inside it ((B, N) bool) and its size ((B, 2) pixels), else None, None."""
        # the train graph lays the table out without Transpose's index tables, inference at Transpose's speed
        if not padded_extent_only:
            pyramid = self.fpn_ncek(self.backbone(img))
            return pyramid, flatten_levels(pyramid[:self.num_roi_levels], self.training), None, None
        masks = padded_extent_masks(img_metas, self.canvas_hw, self.mask_strides, self.size_divisibility)
        pyramid = self.fpn_ncek(self.backbone(img, masks[:-1]), masks[1:])
        return (pyramid, flatten_levels(pyramid[:self.num_roi_levels], self.training),
                anchor_validity(masks[1:], self.num_anchors), padded_extent(img_metas, self.size_divisibility))

    def construct(self, img, img_metas, gt_bboxes=None, gt_labels=None, gt_valids=None, gt_masks=None):
        if self.training:
            return self.train_losses(img, img_metas, gt_bboxes, gt_labels, gt_valids, gt_masks)
        return self.detect(img, img_metas)

    def train_losses(self, img, img_metas, gt_bboxes, gt_labels, gt_valids, gt_masks):
        # training sees the whole canvas, as detectron2 trains on batches padded to their largest
        # image (the padded-extent masks would also keep a second copy of every activation)
        pyramid, table, _, _ = self.features(img, img_metas)
        rpn_cls, rpn_reg = self.rpn_with_loss(pyramid)
        loss_rpn_cls, loss_rpn_reg = self.rpn_loss(rpn_cls, rpn_reg, gt_bboxes, gt_valids)
        proposals, proposal_valid = self.proposal_train(rpn_cls, rpn_reg, img_metas)
        rois, labels, valid, bbox_targets, gt_index = self.sampler_stage2(proposals, proposal_valid, gt_bboxes,
                                                                          gt_labels, gt_valids)
        roi_feats = self.roi_align(table, rois_with_index(self.train_roi_index, rois.reshape(-1, 4)))
        cls_logits, deltas = self.rcnn_cls(roi_feats)
        loss_cls, loss_reg = rcnn_box_losses(cls_logits, deltas, labels.reshape(-1), valid.reshape(-1),
                                             bbox_targets.reshape(-1, 4), self.num_classes, self.box_beta)

        # the mask branch trains on the leading slots, which hold the sampled positives: on their
        # RoIs, or with train_on_pred_boxes on the box head's boxes for their GT class (detectron2)
        n = self.num_pos_slots
        pos_rois = rois[:, :n].reshape(-1, 4)
        pos_labels = labels[:, :n].reshape(-1)
        if self.train_on_pred_boxes:
            pos_deltas = deltas.reshape(rois.shape[0], rois.shape[1], -1)[:, :n].reshape(-1, deltas.shape[1])
            pos_rois = refined_boxes(pos_rois, pos_deltas, pos_labels, self.num_classes, *self.box_coder)
        pos_weights = (pos_labels > 0).astype(ms.float32)
        pos_instance = (self.gt_mask_offset + gt_index[:, :n]).reshape(-1)
        pos_image_hw = ops.gather(img_metas[:, :2], self.pos_roi_index, 0)
        loss_mask, loss_point = self.mask_branch.losses(table, pos_rois, self.pos_roi_index, pos_labels, pos_weights,
                                                        gt_masks.reshape(-1, gt_masks.shape[2]), pos_instance,
                                                        pos_image_hw)
        return loss_rpn_cls, loss_rpn_reg, loss_cls, loss_reg, loss_mask, loss_point

    def detect(self, img, img_metas):
        pyramid, table, anchor_valid, extents = self.features(img, img_metas, self.size_divisibility > 0)
        rpn_cls, rpn_reg = self.rpn_with_loss(pyramid)
        proposals, proposal_valid = self.proposal_test(rpn_cls, rpn_reg, img_metas, anchor_valid)
        rois = rois_with_index(self.test_roi_index, proposals.reshape(-1, 4))
        cls_logits, deltas = self.rcnn_cls(self.roi_align(table, rois, extents))
        boxes, scores, labels, valid = self.postprocess(proposals, proposal_valid, cls_logits, deltas, img_metas)
        masks = self.mask_branch.predict(table, boxes.reshape(-1, 4), self.det_index, labels.reshape(-1))
        masks = masks.reshape((boxes.shape[0], boxes.shape[1]) + masks.shape[1:])
        return boxes, scores, labels, valid, masks
