"""ResNet backbone returning C2..C5, with model-zoo parameter names.

Bottleneck blocks (ResNet-50/101) or basic blocks (ResNet-18/34, as detectron2's BasicBlock: two
3x3 convs), by config (``resnet_block_type``). Two variants of the bottleneck architecture, by
config: the model zoo's (stride on the 3x3 conv of a stage's first block, stem max-pool padded at
the bottom/right only, "same" style) and detectron2's MSRA one (``stride_in_1x1``: stride on the
first 1x1 conv; ``stem_pool_padding: symmetric``: max-pool with padding 1 on every side, as
``F.max_pool2d(x, 3, 2, 1)``).
"""
from mindspore import nn, ops
from mindspore.common.initializer import HeNormal

from src.layers.conv2d import Conv2d
from src.layers.frozen_batch_norm import conv_frozen_batch_norm, folding_saves_memory


def make_norm(kind, channels):
    """Normalisation layer of the backbone.

    frozen_bn: BatchNorm on its moving statistics in training too (the model zoo; meant for
        pretrained weights). bn: BatchNorm with batch statistics while training. gn: GroupNorm(32).
    All keep the parameter names gamma/beta (and moving_mean/moving_variance for BN).
    """
    if kind == "frozen_bn":  # in training, ``conv_norm`` folds it into the conv before it where that saves memory
        return nn.BatchNorm2d(channels, eps=1e-5, momentum=0.9, use_batch_statistics=False)
    if kind == "bn":
        return nn.BatchNorm2d(channels, eps=1e-5, momentum=0.9)
    if kind == "gn":
        return nn.GroupNorm(32, channels, eps=1e-5)
    raise ValueError(f"backbone_norm: unknown kind {kind!r}")


def conv_norm(conv, norm, x, fold):
    """``norm(conv(x))``. With ``fold`` (``norm`` is a frozen BatchNorm and the cell trains), computed
    as one convolution whose backward pass keeps no convolution output, where that keeps less memory
    (``src.layers.frozen_batch_norm``)."""
    if fold and folding_saves_memory(conv, x.shape):
        return conv_frozen_batch_norm(conv, norm, x)
    return norm(conv(x))


def _conv(in_ch, out_ch, kernel, stride):
    return Conv2d(in_ch, out_ch, kernel, stride=stride, pad_mode="pad", padding=kernel // 2,
                  has_bias=False, weight_init=HeNormal(mode="fan_out", nonlinearity="relu"))


class _ResidualBlock(nn.Cell):
    """What both block types share: the projection shortcut (1x1 conv + norm, model-zoo names
    ``conv_down_sample`` / ``bn_down_sample``) where the stride or the channels change."""

    def __init__(self, in_channels, out_channels, stride, norm):
        super().__init__()
        self.relu = nn.ReLU()
        self.fold_norm = norm == "frozen_bn"
        self.down_sample = stride != 1 or in_channels != out_channels
        if self.down_sample:
            self.conv_down_sample = _conv(in_channels, out_channels, 1, stride)
            self.bn_down_sample = make_norm(norm, out_channels)

    def conv_then_norm(self, conv, norm, x):
        """``norm(conv(x))``, folded (``conv_norm``) where the block's norm is frozen and it trains."""
        return conv_norm(conv, norm, x, self.fold_norm and self.training)

    def shortcut(self, x):
        """x (N, Cin, H, W) -> (N, Cout, H/stride, W/stride): the projection, or x itself."""
        if not self.down_sample:
            return x
        return self.conv_then_norm(self.conv_down_sample, self.bn_down_sample, x)


class Bottleneck(_ResidualBlock):
    """1x1 -> 3x3 -> 1x1 residual block; (N, Cin, H, W) -> (N, Cout, H/stride, W/stride).

    The stride sits on the 3x3 conv, or on the first 1x1 with ``stride_in_1x1``.
    """

    expansion = 4

    def __init__(self, in_channels, out_channels, stride, norm, stride_in_1x1=False):
        super().__init__(in_channels, out_channels, stride, norm)
        mid = out_channels // self.expansion
        stride_1x1, stride_3x3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1 = _conv(in_channels, mid, 1, stride_1x1)
        self.bn1 = make_norm(norm, mid)
        self.conv2 = _conv(mid, mid, 3, stride_3x3)
        self.bn2 = make_norm(norm, mid)
        self.conv3 = _conv(mid, out_channels, 1, 1)
        self.bn3 = make_norm(norm, out_channels)
        self.stride_in_1x1 = stride_in_1x1

    def construct(self, x, mask_in=None, mask_out=None):
        """x (N, Cin, H, W); mask_in / mask_out: None, or (N, 1, h, w) ``padding_mask`` masks at the
        block's input / output resolution; the 3x3 conv's input is multiplied by the one at its resolution."""
        out = self.relu(self.conv_then_norm(self.conv1, self.bn1, x))
        if mask_in is not None:
            out = out * (mask_out if self.stride_in_1x1 else mask_in)
        out = self.relu(self.conv_then_norm(self.conv2, self.bn2, out))
        out = self.conv_then_norm(self.conv3, self.bn3, out)
        return self.relu(out + self.shortcut(x))


class BasicBlock(_ResidualBlock):
    """3x3 -> 3x3 residual block (ResNet-18/34); (N, Cin, H, W) -> (N, Cout, H/stride, W/stride).

    The stride sits on the first 3x3 conv; ``stride_in_1x1`` does not apply (there is no 1x1).
    """

    def __init__(self, in_channels, out_channels, stride, norm, stride_in_1x1=False):
        super().__init__(in_channels, out_channels, stride, norm)
        self.conv1 = _conv(in_channels, out_channels, 3, stride)
        self.bn1 = make_norm(norm, out_channels)
        self.conv2 = _conv(out_channels, out_channels, 3, 1)
        self.bn2 = make_norm(norm, out_channels)

    def construct(self, x, mask_in=None, mask_out=None):
        """x (N, Cin, H, W); mask_in / mask_out: as ``Bottleneck``: each 3x3 conv's input is multiplied
        by the mask at its resolution."""
        out = x if mask_in is None else x * mask_in
        out = self.relu(self.conv_then_norm(self.conv1, self.bn1, out))
        if mask_out is not None:
            out = out * mask_out
        out = self.conv_then_norm(self.conv2, self.bn2, out)
        return self.relu(out + self.shortcut(x))


BLOCK_TYPES = {"bottleneck": Bottleneck, "basic": BasicBlock}


class ResNetFea(nn.Cell):
    """ResNet feature extractor.

    Args:
        block_counts: blocks per stage (bottleneck: [3, 4, 6, 3] = R50, [3, 4, 23, 3] = R101;
            basic: [2, 2, 2, 2] = R18, [3, 4, 6, 3] = R34);
        in_channels / out_channels: per stage (in_channels[0] = the stem's output channels).
        norm: see ``make_norm``.
        frozen_stages: stages whose parameters are frozen, in ``stage_cells`` order (the config's
            freeze_at): gradients stop at their outputs, so that no backward pass runs through them
            (as PyTorch's autograd skips a frozen stem and layer1; MindSpore would otherwise compute
            their input gradients, down to the image, and discard them).
        stride_in_1x1: see ``Bottleneck``. stem_pool_padding: "same" or "symmetric" (see the module).
        block_type: "bottleneck" or "basic".
    Input (B, 3, H, W); output (C2, C3, C4, C5) with strides 4, 8, 16, 32.
    """

    def __init__(self, block_counts, in_channels, out_channels, norm, frozen_stages=0, stride_in_1x1=False,
                 stem_pool_padding="same", block_type="bottleneck"):
        super().__init__()
        if block_type not in BLOCK_TYPES:
            raise ValueError(f"resnet_block_type must be one of {sorted(BLOCK_TYPES)}, got {block_type!r}")
        block = BLOCK_TYPES[block_type]
        self.frozen_stages = frozen_stages
        stem = in_channels[0]
        self.conv1 = _conv(3, stem, 7, 2)
        self.bn1 = make_norm(norm, stem)
        self.fold_norm = norm == "frozen_bn"
        self.relu = nn.ReLU()
        if stem_pool_padding == "same":
            self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, pad_mode="same")
        elif stem_pool_padding == "symmetric":
            # inputs are ReLU outputs (>= 0), so zero padding never wins the max: same as -inf padding
            self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, pad_mode="pad", padding=1)
        else:
            raise ValueError(f"stem_pool_padding must be 'same' or 'symmetric', got {stem_pool_padding!r}")
        stages = []
        for i, (count, cin, cout) in enumerate(zip(block_counts, in_channels, out_channels)):
            stride = 1 if i == 0 else 2
            blocks = [block(cin if j == 0 else cout, cout, stride if j == 0 else 1, norm, stride_in_1x1)
                      for j in range(count)]
            stages.append(nn.SequentialCell(blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        # indices into padded_extent_masks(strides 2, 4, ..., 32) of each stage's input and output
        # resolution (layer1's input is the max-pool's output, stride 4 as its own output)
        self.mask_levels = tuple((max(i, 1), i + 1) for i in range(len(stages)))

    def stage_cells(self):
        """Cells in freezing order: stem (conv1 + bn1), layer1, ..., layer4."""
        return [[self.conv1, self.bn1], [self.layer1], [self.layer2], [self.layer3], [self.layer4]]

    def cut(self, x, stage):
        """``x``, the output of stage number ``stage`` (stem = 1), without gradient if that stage is frozen."""
        return ops.stop_gradient(x) if stage <= self.frozen_stages else x

    def stage_with_masks(self, stage, x, masks, levels):
        """One stage whose blocks get the masks of their input and output resolutions
        (``masks[levels[0]]`` is the stage's input resolution, ``masks[levels[1]]`` its output's)."""
        x = stage[0](x, masks[levels[0]], masks[levels[1]])
        for i in range(1, len(stage)):
            x = stage[i](x, masks[levels[1]], masks[levels[1]])
        return x

    def construct(self, x, masks=None):
        """x (B, 3, H, W); masks: None, or ``padding_mask.padded_extent_masks`` at strides 2..32 to
        compute features as on an image padded only to its own extent."""
        x = self.relu(conv_norm(self.conv1, self.bn1, x, self.fold_norm and self.training))
        if masks is None:
            x = self.cut(self.maxpool(x), 1)
            c2 = self.cut(self.layer1(x), 2)
            c3 = self.cut(self.layer2(c2), 3)
            c4 = self.cut(self.layer3(c3), 4)
            c5 = self.cut(self.layer4(c4), 5)
            return c2, c3, c4, c5
        x = self.cut(self.maxpool(x * masks[0]), 1)
        c2 = self.cut(self.stage_with_masks(self.layer1, x, masks, self.mask_levels[0]), 2)
        c3 = self.cut(self.stage_with_masks(self.layer2, c2, masks, self.mask_levels[1]), 3)
        c4 = self.cut(self.stage_with_masks(self.layer3, c3, masks, self.mask_levels[2]), 4)
        c5 = self.cut(self.stage_with_masks(self.layer4, c4, masks, self.mask_levels[3]), 5)
        return c2, c3, c4, c5
