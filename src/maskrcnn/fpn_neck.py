"""Feature pyramid neck (attribute name ``fpn_ncek`` in the network, as in the model zoo)."""
import mindspore as ms
from mindspore import nn, ops
from mindspore.common.initializer import XavierUniform

from src.layers.conv2d import Conv2d


class FeatPyramidNeck(nn.Cell):
    """Lateral 1x1 + output 3x3 convs, top-down x2 upsampling, P6 by stride-2 subsampling of P5
    (max-pool k1 s2, as detectron2's LastLevelMaxPool).

    Args:
        in_channels: channels of C2..C5; out_channels: pyramid channels; num_outs: 5 (P2..P6);
        upsample: "bilinear" (the model zoo's legacy TF1 resize, half_pixel_centers=False) or
            "nearest" (detectron2's ``F.interpolate(scale_factor=2, mode="nearest")``).
    Input: (C2, C3, C4, C5), each (B, C_l, H_l, W_l). Output: (P2, ..., P6), each (B, out_channels, H_l, W_l).
    """

    def __init__(self, in_channels, out_channels, num_outs, upsample="bilinear"):
        super().__init__()
        if num_outs != len(in_channels) + 1:
            raise ValueError(f"fpn_num_outs must be {len(in_channels) + 1} (one extra level), got {num_outs}")
        self.lateral_convs_list = nn.CellList([
            Conv2d(c, out_channels, 1, has_bias=True, weight_init=XavierUniform(), bias_init="zeros")
            for c in in_channels])
        self.fpn_convs_list = nn.CellList([
            Conv2d(out_channels, out_channels, 3, pad_mode="same", has_bias=True, weight_init=XavierUniform(),
                   bias_init="zeros") for _ in in_channels])
        if upsample not in ("bilinear", "nearest"):
            raise ValueError(f"fpn_upsample must be 'bilinear' or 'nearest', got {upsample!r}")
        # The model zoo used the legacy (TF1) bilinear resize; keep it so its weights see the same maps.
        self.upsample = ops.ResizeBilinearV2(align_corners=False, half_pixel_centers=False)
        self.nearest = upsample == "nearest"
        self.extra_pool = nn.MaxPool2d(kernel_size=1, stride=2, pad_mode="same")

    def upsampled(self, x, size):
        """(B, C, h, w) -> (B, C, size[0], size[1])."""
        if self.nearest:
            # torch's interpolate(scale_factor=2, mode="nearest"): output cell i reads input cell
            # i // 2, i.e. each cell copied to a 2 x 2 block (a broadcast, whose gradient is a sum)
            b, c, h, w = x.shape
            x = ops.broadcast_to(x.reshape(b, c, h, 1, w, 1), (b, c, h, 2, w, 2)).reshape(b, c, 2 * h, 2 * w)
            return x[:, :, :size[0], :size[1]]
        return self.upsample(x, size)

    def construct(self, inputs, masks=None):
        """inputs: (C2, ..., C5); masks: None, or ``padding_mask.padded_extent_masks`` of the
        pyramid strides (P2..P6): the 3x3 convs' inputs and the outputs are multiplied by them."""
        laterals = [conv(x) for conv, x in zip(self.lateral_convs_list, inputs)]
        num = len(laterals)
        top_down = [laterals[num - 1]]  # coarsest first
        for i in range(num - 2, -1, -1):
            top_down.append(laterals[i] + self.upsampled(top_down[-1], laterals[i].shape[2:]))
        merged = [top_down[num - 1 - i] for i in range(num)]
        if masks is not None:
            merged = [x * m for x, m in zip(merged, masks)]
        outs = [conv(x) for conv, x in zip(self.fpn_convs_list, merged)]
        outs.append(self.extra_pool(outs[-1]))
        if masks is not None:
            outs = [x * m for x, m in zip(outs, masks)]
        # float32 whatever precision amp_level ran the layers in: RoIAlign and point sampling read these
        return tuple(x.astype(ms.float32) for x in outs)
