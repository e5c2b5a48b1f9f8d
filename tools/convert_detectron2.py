"""Convert a detectron2 PointRend checkpoint (or its ImageNet backbone) into a MindSpore checkpoint.

    python tools/convert_detectron2.py --src model_final_88c6f8.pkl --dst pointrend_r50_coco.ckpt [--num_classes N]

The result loads into the network built from ``configs/detectron2_pointrend_r50_fpn.yaml``
(``--checkpoint_path`` of eval.py / infer.py, or ``--pre_trained`` of train.py for fine-tuning).
``.pkl`` files (detectron2's published model files) need no torch; ``.pth`` files need torch.
R50 and R101 (``--resnet_block=[3,4,23,3]``) backbones convert alike. With ``--num_classes``
other than the source's (80 COCO classes + background = 81) the class-specific layers are left to
the network's initialiser, for fine-tuning on another data set. detectron2's ImageNet backbones in
Caffe2 naming (``R-50.pkl``, what its COCO recipes start from) give a backbone-only checkpoint for
``train.py --pre_trained`` (the FPN and heads start from the initialiser). Anything not recognised
stops the conversion with one line naming the key; the output file is written atomically.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from src.utils.runtime import run_main  # noqa: E402  (after the path insert)


def convert(src, dst, num_classes=None, log=print):
    """Read ``src``, convert, save ``dst``; returns the conversion report."""
    import mindspore as ms

    from src.detectron2_checkpoint import convert_state_dict, read_detectron2_weights
    from src.utils.atomic_io import atomic_path

    state = read_detectron2_weights(src)
    params, report = convert_state_dict(state, num_classes)
    with atomic_path(dst) as tmp:
        ms.save_checkpoint([{"name": n, "data": ms.Tensor(v)} for n, v in sorted(params.items())], tmp)
    log(f"{src}: {len(state)} tensors read, {report['converted']} converted, {len(report['ignored'])} ignored "
        f"(not weights: {', '.join(report['ignored']) or 'none'}), {len(report['reinitialised'])} class-specific "
        f"left to the network's initialiser")
    for name in report["reinitialised"]:
        log(f"  re-initialised: {name}")
    if report["backbone_only"]:
        log("ImageNet backbone only (Caffe2 names): the FPN and the heads are left to the network's initialiser")
    else:
        log(f"classes: source {report['source_classes']} + background, target num_classes {report['num_classes']}")
    log(f"wrote {os.path.abspath(dst)}")
    return report


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", required=True, help="detectron2 checkpoint (.pkl, or .pth with torch)")
    parser.add_argument("--dst", required=True, help="MindSpore checkpoint to write (.ckpt)")
    parser.add_argument("--num_classes", type=int, default=None,
                        help="classes of the target network including background (default: the source's)")
    args = parser.parse_args()
    convert(args.src, args.dst, args.num_classes)


if __name__ == "__main__":
    run_main(main)
