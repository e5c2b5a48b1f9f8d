"""PointRend coarse mask head (detectron2's CoarseMaskHead with the model-zoo sizes)."""
import mindspore as ms
from mindspore import nn, ops, Parameter
from mindspore.common.initializer import HeNormal, Normal, XavierUniform, initializer

from src.layers.tensor_utils import permute


class PatchConv(nn.Cell):
    """A k x k convolution with stride k (non-overlapping patches, no padding) on input given patch
    by patch, channels last.

    Parameters have ``nn.Conv2d``'s names, shapes and layout (weight (out, in, k, k), bias (out,)).
    Written as one matmul over the patches because oneDNN's stride-2 2x2 convolution gradient with
    respect to its input was the slowest kernel of the mask branch on CPU (the bench shows the whole
    train step). The input comes already grouped by patch (the mask branch samples its points in
    that order, ``patch_grid_points``): regrouping a channels-last map here would be a Transpose,
    whose CPU kernel keeps an 8-byte offset per element for the life of the graph (README, memory).

    Args:
        in_channels, out_channels, kernel: sizes; weight_init: initializer of the weight.
    construct: (R, H / k, W / k, k, k, in_channels), the k x k patch of each output cell ->
        (R, H / k, W / k, out_channels).
    """

    def __init__(self, in_channels, out_channels, kernel, weight_init):
        super().__init__()
        self.weight = Parameter(initializer(weight_init, [out_channels, in_channels, kernel, kernel], ms.float32))
        self.bias = Parameter(initializer("zeros", [out_channels], ms.float32))
        self.matmul = ops.MatMul(transpose_b=True)

    def construct(self, x):
        r, oh, ow, k, _, c = x.shape
        patches = x.reshape(r * oh * ow, k * k * c)
        out_channels = self.weight.shape[0]
        weight = permute(self.weight, (0, 2, 3, 1)).reshape(out_channels, k * k * c)
        # bias_add, not +: see rcnn_cls.DenseNoTranpose
        return ops.bias_add(self.matmul(patches, weight), self.bias).reshape(r, oh, ow, out_channels)


class CoarseMaskHead(nn.Cell):
    """Coarse class-specific mask logits from a regular grid of fine features.

    Args:
        in_channels: channels of the sampled features (256); conv_dim: channels after the 2x2/2
            conv; fc_dim, num_fc: the FC stack; out_resolution: side of the output (7);
            num_classes: classes including background.
    Input (R, out_resolution, out_resolution, 2, 2, in_channels): fine features on a grid of side
    2 * out_resolution, grouped by the 2x2 patch of each output cell (``patch_grid_points``);
    output (R, num_classes, out_resolution, out_resolution).
    """

    def __init__(self, in_channels, conv_dim, fc_dim, num_fc, out_resolution, num_classes):
        super().__init__()
        self.num_classes = num_classes
        self.out_resolution = out_resolution
        self.reduce_spatial_dim_conv = PatchConv(in_channels, conv_dim, 2,
                                                 HeNormal(mode="fan_out", nonlinearity="relu"))
        dims = [conv_dim * out_resolution * out_resolution] + [fc_dim] * num_fc
        self.fcs_seq = nn.CellList([nn.Dense(dims[i], dims[i + 1], weight_init=XavierUniform(), bias_init="zeros")
                                    for i in range(num_fc)])
        self.prediction = nn.Dense(dims[-1], num_classes * out_resolution * out_resolution,
                                   weight_init=Normal(0.001), bias_init="zeros")
        self.relu = nn.ReLU()

    def construct(self, x):
        x = self.relu(self.reduce_spatial_dim_conv(x))  # (R, out, out, conv_dim)
        # the FCs take detectron2's (C, H, W) flattening order
        x = permute(x, (0, 3, 1, 2)).reshape(x.shape[0], -1)
        for fc in self.fcs_seq:
            x = self.relu(fc(x))
        # float32 whatever precision amp_level ran the layers in: losses and point selection read these
        x = self.prediction(x).astype(ms.float32)
        return x.reshape(x.shape[0], self.num_classes, self.out_resolution, self.out_resolution)
