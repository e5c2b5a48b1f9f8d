"""Standard Mask R-CNN mask head: 4 convs, deconv, 28x28 class-specific logits."""
import mindspore as ms
from mindspore import nn
from mindspore.common.initializer import HeNormal


class FpnMask(nn.Cell):
    """(R, C, 14, 14) RoI features -> (R, num_classes, 28, 28) mask logits."""

    def __init__(self, in_channels, conv_channels, num_classes):
        super().__init__()
        init = HeNormal(mode="fan_out", nonlinearity="relu")
        self.mask_conv1 = nn.Conv2d(in_channels, conv_channels, 3, pad_mode="same", has_bias=True, weight_init=init)
        self.mask_conv2 = nn.Conv2d(conv_channels, conv_channels, 3, pad_mode="same", has_bias=True, weight_init=init)
        self.mask_conv3 = nn.Conv2d(conv_channels, conv_channels, 3, pad_mode="same", has_bias=True, weight_init=init)
        self.mask_conv4 = nn.Conv2d(conv_channels, conv_channels, 3, pad_mode="same", has_bias=True, weight_init=init)
        self.mask_deconv5 = nn.Conv2dTranspose(conv_channels, conv_channels, 2, stride=2, pad_mode="valid",
                                               has_bias=True, weight_init=init)
        self.mask_conv6 = nn.Conv2d(conv_channels, num_classes, 1, has_bias=True, weight_init=init)
        self.relu = nn.ReLU()

    def construct(self, x):
        x = self.relu(self.mask_conv1(x))
        x = self.relu(self.mask_conv2(x))
        x = self.relu(self.mask_conv3(x))
        x = self.relu(self.mask_conv4(x))
        x = self.relu(self.mask_deconv5(x))
        return self.mask_conv6(x)


class RcnnMask(nn.Cell):
    """Standard mask head (saved as ``rcnn_mask.fpn_mask.*``)."""

    def __init__(self, cfg, num_classes):
        super().__init__()
        self.fpn_mask = FpnMask(cfg.rcnn_in_channels, cfg.rcnn_mask_out_channels, num_classes)

    def construct(self, roi_features):
        # float32 whatever precision amp_level ran the layers in: the loss and the pasting read these
        return self.fpn_mask(roi_features).astype(ms.float32)
