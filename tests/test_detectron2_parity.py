"""This network with the detectron2 preset against detectron2's PointRend itself, stage by stage.

tests/data holds a reduced-width detectron2 PointRend R50-FPN (random weights with calibrated
statistics, 4 classes) and everything it computed on two photos and one synthetic image
(tools/make_detectron2_reference.py, run with detectron2 and torch outside this project). Its
weights go through tools/convert_detectron2.py, and tools/detectron2_parity.py runs every stage on
the same input as detectron2's stage had, so that a difference points at one stage. The
tolerances are those of ``TOLERANCES`` there: features and logits to 1e-4 of their largest
magnitude, boxes matched one to one at IoU > 0.99, masks at IoU > 0.98.
"""
import pytest

from tools.convert_detectron2 import convert
from tools.detectron2_parity import (REFERENCE_NPZ, REFERENCE_PKL, TOLERANCES, compare, load_reference, passed,
                                     reference_config)


@pytest.fixture(scope="module")
def metrics(tmp_path_factory):
    ref = load_reference(REFERENCE_NPZ)
    ckpt = str(tmp_path_factory.mktemp("d2") / "converted.ckpt")
    report = convert(REFERENCE_PKL, ckpt, log=lambda *_: None)
    assert report["source_classes"] == 4 and not report["reinitialised"]
    return compare(ref, reference_config(ref), ckpt)


def test_the_comparison_covers_every_stage(metrics):
    assert metrics["images"] == 3 and metrics["feature_tensors"] >= 9
    assert metrics["proposals"] == 3000 and metrics["detections"] >= 250 and metrics["final_masks"] >= 250
    assert metrics["capped_rois"] < 0.05 * metrics["proposals"]


@pytest.mark.parametrize("name", list(TOLERANCES))
def test_stage_matches_detectron2(metrics, name):
    assert passed(name, metrics[name]), f"{TOLERANCES[name][1]}: {metrics[name]} vs {TOLERANCES[name][0]}"
