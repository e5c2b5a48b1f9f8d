"""Export the inference network to MINDIR (fixed input size and batch from the config).

    python export.py --ckpt_file=CKPT --num_classes=N [--file_name=pointrend] [--batch_size_export=1]

Inputs of the exported graph: img (B, 3, img_height, img_width) float32 (normalised, zero padded)
and img_metas (B, 4) float32; outputs as the network's inference (boxes, scores, labels, valid, masks).
"""
import os

import numpy as np

from src.utils.runtime import run_main, setup_context


def export_mindir(cfg, file_name=None):
    """Write ``<file_name>.mindir``; returns its path."""
    import mindspore as ms

    from src.inference import build_detector
    from src.utils.atomic_io import atomic_path

    net = build_detector(cfg, cfg.ckpt_file, cfg.batch_size_export)
    b = cfg.batch_size_export
    img = ms.Tensor(np.zeros((b, 3, cfg.img_height, cfg.img_width), np.float32))
    metas = ms.Tensor(np.tile(np.array([[cfg.img_height, cfg.img_width, 1.0, 1.0]], np.float32), (b, 1)))
    path = os.path.abspath(file_name or cfg.file_name) + ".mindir"
    with atomic_path(path) as tmp:
        ms.export(net, img, metas, file_name=tmp, file_format=cfg.file_format)
    print(f"exported {path} (inputs img {list(img.shape)}, img_metas {list(metas.shape)})", flush=True)
    return path


def main():
    from src.config import load_config, require
    cfg = load_config(usage=__doc__)
    require(cfg, "ckpt_file", "set --ckpt_file=CHECKPOINT to export")
    require(cfg, "num_classes", "set it (background included) to export")
    setup_context(cfg)
    export_mindir(cfg)


if __name__ == "__main__":
    run_main(main)
