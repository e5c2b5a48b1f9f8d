"""PointRend point head: a per-point MLP on fine features with the coarse prediction fed to
every layer (detectron2's StandardPointHead, coarse_pred_each_layer=True)."""
from mindspore import nn, ops
from mindspore.common.initializer import HeNormal, Normal


class StandardPointHead(nn.Cell):
    """Args:
        fine_channels: channels of the fine-grained features (256); fc_dim, num_fc: hidden layers;
        num_classes: classes including background (also the coarse feature channels).
    construct: fine (R, fine_channels, P), coarse (R, num_classes, P) -> logits (R, num_classes, P).
    """

    def __init__(self, fine_channels, fc_dim, num_fc, num_classes):
        super().__init__()
        layers = []
        in_dim = fine_channels + num_classes
        for _ in range(num_fc):
            layers.append(nn.Conv1d(in_dim, fc_dim, 1, has_bias=True, weight_init=HeNormal(mode="fan_out"),
                                    bias_init="zeros"))
            in_dim = fc_dim + num_classes
        self.seq = nn.CellList(layers)
        self.predictor = nn.Conv1d(in_dim, num_classes, 1, has_bias=True, weight_init=Normal(0.001),
                                   bias_init="zeros")
        self.relu = nn.ReLU()

    def hidden(self, fine, coarse):
        """Last hidden features with the coarse features appended: (R, fc_dim + num_classes, P)."""
        x = ops.concat([fine, coarse], 1)
        for layer in self.seq:
            x = ops.concat([self.relu(layer(x)), coarse], 1)
        return x

    def construct(self, fine, coarse):
        return self.predictor(self.hidden(fine, coarse))

    def predict_class(self, fine, coarse, classes):
        """Logits of one class per RoI only (inference): (R, P) for classes (R,) int32."""
        x = self.hidden(fine, coarse)
        weight = self.predictor.weight.reshape(self.predictor.weight.shape[0], -1)
        w = ops.gather(weight, classes, 0)  # (R, D)
        b = ops.gather(self.predictor.bias, classes, 0)  # (R,)
        return ops.squeeze(ops.bmm(ops.expand_dims(w, 1), x), 1) + ops.expand_dims(b, 1)
