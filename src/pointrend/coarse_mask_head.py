"""PointRend coarse mask head (detectron2's CoarseMaskHead with the model-zoo sizes)."""
from mindspore import nn
from mindspore.common.initializer import HeNormal, Normal, XavierUniform


class CoarseMaskHead(nn.Cell):
    """Coarse class-specific mask logits from a regular grid of fine features.

    Args:
        in_channels: channels of the sampled features (256); conv_dim: channels after the 2x2/2
            conv; fc_dim, num_fc: the FC stack; out_resolution: side of the output (7);
            num_classes: classes including background.
    Input (R, in_channels, 2 * out_resolution, 2 * out_resolution); output (R, num_classes, out, out).
    """

    def __init__(self, in_channels, conv_dim, fc_dim, num_fc, out_resolution, num_classes):
        super().__init__()
        self.num_classes = num_classes
        self.out_resolution = out_resolution
        self.reduce_spatial_dim_conv = nn.Conv2d(in_channels, conv_dim, 2, stride=2, pad_mode="valid", has_bias=True,
                                                 weight_init=HeNormal(mode="fan_out", nonlinearity="relu"),
                                                 bias_init="zeros")
        dims = [conv_dim * out_resolution * out_resolution] + [fc_dim] * num_fc
        self.fcs_seq = nn.CellList([nn.Dense(dims[i], dims[i + 1], weight_init=XavierUniform(), bias_init="zeros")
                                    for i in range(num_fc)])
        self.prediction = nn.Dense(dims[-1], num_classes * out_resolution * out_resolution,
                                   weight_init=Normal(0.001), bias_init="zeros")
        self.relu = nn.ReLU()

    def construct(self, x):
        x = self.relu(self.reduce_spatial_dim_conv(x))
        x = x.reshape(x.shape[0], -1)
        for fc in self.fcs_seq:
            x = self.relu(fc(x))
        x = self.prediction(x)
        return x.reshape(x.shape[0], self.num_classes, self.out_resolution, self.out_resolution)
