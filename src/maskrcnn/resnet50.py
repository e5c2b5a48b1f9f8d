"""ResNet-50 backbone (stride on the 3x3 conv) returning C2..C5, with model-zoo parameter names."""
from mindspore import nn, ops
from mindspore.common.initializer import HeNormal


def make_norm(kind, channels):
    """Normalisation layer of the backbone.

    frozen_bn: BatchNorm on its moving statistics in training too (the model zoo; meant for
        pretrained weights). bn: BatchNorm with batch statistics while training. gn: GroupNorm(32).
    All keep the parameter names gamma/beta (and moving_mean/moving_variance for BN).
    """
    if kind == "frozen_bn":
        return nn.BatchNorm2d(channels, eps=1e-5, momentum=0.9, use_batch_statistics=False)
    if kind == "bn":
        return nn.BatchNorm2d(channels, eps=1e-5, momentum=0.9)
    if kind == "gn":
        return nn.GroupNorm(32, channels, eps=1e-5)
    raise ValueError(f"backbone_norm: unknown kind {kind!r}")


def _conv(in_ch, out_ch, kernel, stride):
    return nn.Conv2d(in_ch, out_ch, kernel, stride=stride, pad_mode="pad", padding=kernel // 2,
                     has_bias=False, weight_init=HeNormal(mode="fan_out", nonlinearity="relu"))


class Bottleneck(nn.Cell):
    """1x1 -> 3x3 (stride) -> 1x1 residual block; (N, Cin, H, W) -> (N, Cout, H/stride, W/stride)."""

    expansion = 4

    def __init__(self, in_channels, out_channels, stride, norm):
        super().__init__()
        mid = out_channels // self.expansion
        self.conv1 = _conv(in_channels, mid, 1, 1)
        self.bn1 = make_norm(norm, mid)
        self.conv2 = _conv(mid, mid, 3, stride)
        self.bn2 = make_norm(norm, mid)
        self.conv3 = _conv(mid, out_channels, 1, 1)
        self.bn3 = make_norm(norm, out_channels)
        self.relu = nn.ReLU()
        self.down_sample = stride != 1 or in_channels != out_channels
        if self.down_sample:
            self.conv_down_sample = _conv(in_channels, out_channels, 1, stride)
            self.bn_down_sample = make_norm(norm, out_channels)

    def construct(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.down_sample:
            identity = self.bn_down_sample(self.conv_down_sample(x))
        return self.relu(out + identity)


class ResNetFea(nn.Cell):
    """ResNet-50 feature extractor.

    Args:
        block_counts: blocks per stage ([3, 4, 6, 3]); in_channels / out_channels: per stage.
        norm: see ``make_norm``.
        frozen_stages: stages whose parameters are frozen, in ``stage_cells`` order (the config's
            freeze_at): gradients stop at their outputs, so that no backward pass runs through them
            (as PyTorch's autograd skips a frozen stem and layer1; MindSpore would otherwise compute
            their input gradients, down to the image, and discard them).
    Input (B, 3, H, W); output (C2, C3, C4, C5) with strides 4, 8, 16, 32.
    """

    def __init__(self, block_counts, in_channels, out_channels, norm, frozen_stages=0):
        super().__init__()
        self.frozen_stages = frozen_stages
        self.conv1 = _conv(3, 64, 7, 2)
        self.bn1 = make_norm(norm, 64)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, pad_mode="same")
        stages = []
        for i, (count, cin, cout) in enumerate(zip(block_counts, in_channels, out_channels)):
            stride = 1 if i == 0 else 2
            blocks = [Bottleneck(cin if j == 0 else cout, cout, stride if j == 0 else 1, norm) for j in range(count)]
            stages.append(nn.SequentialCell(blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages

    def stage_cells(self):
        """Cells in freezing order: stem (conv1 + bn1), layer1, ..., layer4."""
        return [[self.conv1, self.bn1], [self.layer1], [self.layer2], [self.layer3], [self.layer4]]

    def cut(self, x, stage):
        """``x``, the output of stage number ``stage`` (stem = 1), without gradient if that stage is frozen."""
        return ops.stop_gradient(x) if stage <= self.frozen_stages else x

    def construct(self, x):
        x = self.cut(self.maxpool(self.relu(self.bn1(self.conv1(x)))), 1)
        c2 = self.cut(self.layer1(x), 2)
        c3 = self.cut(self.layer2(c2), 3)
        c4 = self.cut(self.layer3(c3), 4)
        c5 = self.cut(self.layer4(c4), 5)
        return c2, c3, c4, c5
