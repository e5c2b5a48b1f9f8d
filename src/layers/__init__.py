"""Generic layers below both model packages (Mask R-CNN and the PointRend add-on).

* ``feature_table``: the flat multi-level feature table and its bilinear look-ups.
* ``roi_align``: RoIAlign that pools each RoI from its own FPN level.
* ``point_sample``: ``point_sample``, sampling one table level at image points, point grids.
* ``box_utils``: IoU, box coder, clipping, NMS, smooth L1.
* ``tensor_utils``: row gathers, per-class selection, pairwise operands.
"""
