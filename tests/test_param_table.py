"""The network's parameter names and shapes against the model-zoo Mask R-CNN R50 table."""
import json
import os


from src.maskrcnn_pointrend_r50 import MaskRcnnPointRend
from src.config import load_config

# the model zoo's Mask R-CNN R50 checkpoint: name, shape and flags of each of its tensors
TSV = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "modelzoo_maskrcnn_r50_params.tsv")


def read_table():
    with open(TSV, encoding="utf-8") as f:
        rows = [line.rstrip("\n").split("\t") for line in f][1:]
    network = [r for r in rows if not r[2].startswith("OPTIMIZER")]
    return {r[0]: tuple(json.loads(r[1])) for r in network}, {r[0] for r in network if "requires_grad=False" not in r[2]}


def build(*argv):
    cfg = load_config(["--device_target=CPU", *argv])
    return MaskRcnnPointRend(cfg, cfg.batch_size)


def test_all_307_names_and_shapes_match():
    table, _ = read_table()
    assert len(table) == 307
    assert len(read_table()[1]) == 168  # trainable in the model zoo
    ours = {p.name: tuple(p.shape) for p in build().get_parameters()}
    missing = sorted(set(table) - set(ours))
    wrong = {k: (table[k], ours[k]) for k in table if k in ours and ours[k] != table[k]}
    assert not missing and not wrong, (missing[:5], list(wrong.items())[:5])
    extra = sorted(set(ours) - set(table))
    assert extra and all(n.startswith(("mask_coarse_head.", "mask_point_head.")) for n in extra), extra
    assert ours["mask_coarse_head.prediction.weight"] == (81 * 49, 1024)
    assert ours["mask_point_head.predictor.weight"][:2] == (81, 256 + 81)


def test_trainable_flags_follow_the_model_zoo_freezing():
    table, trainable_ref = read_table()
    standard = {p.name for p in build("--mask_head=standard").trainable_params()}
    assert standard == trainable_ref  # freeze_at=2: stem + layer1 frozen, exactly as the model zoo
    pointrend = {p.name for p in build().trainable_params()}
    assert {n for n in pointrend if n in table} == {n for n in trainable_ref if not n.startswith("rcnn_mask.")}
    heads_only = {p.name for p in build("--train_heads_only=True").trainable_params()}
    assert heads_only and all(n.startswith(("mask_coarse_head.", "mask_point_head.")) for n in heads_only)
    assert len(heads_only) == 16
