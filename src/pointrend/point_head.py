"""PointRend point head: a per-point MLP on fine features with the coarse prediction fed to
every layer (detectron2's StandardPointHead, coarse_pred_each_layer=True)."""
import mindspore as ms
from mindspore import nn, ops
from mindspore.common.initializer import HeNormal, Normal

from src.layers.relu_concat import ReluConcat


class StandardPointHead(nn.Cell):
    """Args:
        fine_channels: channels of the fine-grained features (256); fc_dim, num_fc: hidden layers;
        num_classes: classes including background (also the coarse feature channels).
    construct: fine (R, fine_channels, P), coarse (R, num_classes, P) -> logits (R, num_classes, P).
    """

    def __init__(self, fine_channels, fc_dim, num_fc, num_classes):
        super().__init__()
        self.fine_channels = fine_channels
        layers = []
        in_dim = fine_channels + num_classes
        for _ in range(num_fc):
            layers.append(nn.Conv1d(in_dim, fc_dim, 1, has_bias=True, weight_init=HeNormal(mode="fan_out"),
                                    bias_init="zeros"))
            in_dim = fc_dim + num_classes
        self.seq = nn.CellList(layers)
        self.predictor = nn.Conv1d(in_dim, num_classes, 1, has_bias=True, weight_init=Normal(0.001),
                                   bias_init="zeros")
        self.relu_concat = ReluConcat()
        self.matmul_t = ops.MatMul(transpose_b=True)

    def hidden_after_first(self, first, coarse):
        """Last hidden features (R, fc_dim + num_classes, P) from the first layer's pre-activation
        ``first`` (R, fc_dim, P) and the coarse features (R, num_classes, P)."""
        x = self.relu_concat(first, coarse)
        for i in range(1, len(self.seq)):
            x = self.relu_concat(self.seq[i](x), coarse)
        return x

    def construct(self, fine, coarse):
        first = self.seq[0](ops.concat([fine, coarse], 1))
        # float32 whatever precision amp_level ran the layers in: the point loss reads these
        return self.predictor(self.hidden_after_first(first, coarse)).astype(ms.float32)

    def first_layer_weights(self):
        """The first layer's weight split by input: fine (fc_dim, fine_channels) and coarse
        (fc_dim, num_classes, 1, 1), the latter still in convolution layout."""
        weight = self.seq[0].weight
        return weight[:, :self.fine_channels].reshape(weight.shape[0], -1), weight[:, self.fine_channels:]

    def fine_projection(self, rows):
        """The first layer's fine-feature weights applied to feature rows, without bias.

        Bilinear sampling with zero padding is linear, so sampling these projected rows equals
        projecting sampled features. At inference the projection is therefore computed once per pixel
        of the fine level and sampled at the points, instead of once per point (4 x 78,400 points for
        100 masks against 64 x 64 pixels at 256x256 or 192 x 320 at 768x1280): a quarter of the
        point head's multiply-adds.

        Args:
            rows: (T, fine_channels) feature rows (a flat feature table).
        Returns:
            (T, fc_dim).
        """
        return self.matmul_t(rows, self.first_layer_weights()[0])

    def predict_class(self, fine_projected, coarse, classes):
        """Logits of one class per RoI only (inference).

        Args:
            fine_projected: (R, fc_dim, P) ``fine_projection`` rows sampled at the points;
            coarse: (R, num_classes, P); classes: (R,) int32.
        Returns:
            (R, P).
        """
        coarse_weight = self.first_layer_weights()[1]
        coarse_part = ops.squeeze(ops.conv2d(ops.expand_dims(coarse, 2), coarse_weight, self.seq[0].bias), 2)
        first = fine_projected + coarse_part
        x = self.hidden_after_first(first, coarse)
        weight = self.predictor.weight.reshape(self.predictor.weight.shape[0], -1)
        w = ops.gather(weight, classes, 0)  # (R, D)
        b = ops.gather(self.predictor.bias, classes, 0)  # (R,)
        return ops.squeeze(ops.bmm(ops.expand_dims(w, 1), x), 1) + ops.expand_dims(b, 1)
