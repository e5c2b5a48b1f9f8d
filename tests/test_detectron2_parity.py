"""This network with the detectron2 preset against detectron2's PointRend itself, stage by stage.

tests/data holds a reduced-width detectron2 PointRend R50-FPN (random weights with calibrated
statistics, 4 classes) and everything it computed on two photos and one synthetic image
(tools/make_detectron2_reference.py, run with detectron2 and torch outside this project). Its
weights go through tools/convert_detectron2.py, and tools/detectron2_parity.py runs every stage on
the same input as detectron2's stage had, so that a difference points at one stage. The
tolerances are those of ``TOLERANCES`` there: features and logits to 1e-4 of their largest
magnitude, boxes matched one to one at IoU > 0.99, masks at IoU > 0.98.

Two canvases: detectron2's padded input size (256 x 384), and a larger one (320 x 448), on which
``size_divisibility: 32`` must give the same results (the RPN maps are not comparable there).
"""
import math

import pytest

from tools.convert_detectron2 import convert
from tools.detectron2_parity import (REFERENCE_NPZ, REFERENCE_PKL, TOLERANCES, compare, load_reference, passed,
                                     reference_config)

CANVASES = {"padded": [], "larger": [("img_height", 320), ("img_width", 448)]}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    ckpt = str(tmp_path_factory.mktemp("d2") / "converted.ckpt")
    report = convert(REFERENCE_PKL, ckpt, log=lambda *_: None)
    assert report["source_classes"] == 4 and not report["reinitialised"]
    return ckpt


@pytest.fixture(scope="module", params=sorted(CANVASES))
def metrics(request, checkpoint):
    ref = load_reference(REFERENCE_NPZ)
    return request.param, compare(ref, reference_config(ref, CANVASES[request.param]), checkpoint)


def test_the_comparison_covers_every_stage(metrics):
    canvas, values = metrics
    assert values["images"] == 3 and values["feature_tensors"] >= 9
    assert values["proposals"] == 3000 and values["detections"] >= 250 and values["final_masks"] >= 250
    assert values["capped_rois"] < 0.05 * values["proposals"]
    assert math.isnan(values["rpn_rel"]) == (canvas == "larger")


@pytest.mark.parametrize("name", list(TOLERANCES))
def test_stage_matches_detectron2(metrics, name):
    canvas, values = metrics
    assert passed(name, values[name]), f"{canvas} canvas, {TOLERANCES[name][1]}: {values[name]}"
