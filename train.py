"""Train PointRend (Mask R-CNN R50-FPN + PointRend) on COCO-format data.

    python train.py --coco_root=DATA --mindrecord_dir=MR [--pre_trained=CKPT] [--key=value ...]

With ``--run_distribute=True`` under mpirun (GPU, NCCL) or msrun (CPU), every process trains on
its shard of the data and gradients are averaged. See README.md.
"""
import os

from src.utils.compile_in_child import compile_in_child
from src.utils.runtime import compile_then_release, run_main, setup_context


def build_train_cell(cfg, net, steps_per_epoch):
    """Optimizer and one-step cell; returns (train_cell, lr table)."""
    import mindspore as ms
    from mindspore import nn

    from src.training.lr_schedule import dynamic_lr
    from src.training.mixed_precision import apply_mixed_precision
    from src.training.network_define import TrainOneStepCell, WithLossCell, split_decay_groups

    lr = dynamic_lr(cfg, steps_per_epoch)
    groups = split_decay_groups(net.trainable_params(), cfg.weight_decay, cfg.weight_decay_bias_norm)
    optimizer = nn.Momentum(groups, learning_rate=ms.Tensor(lr), momentum=cfg.momentum)
    apply_mixed_precision(net, cfg.amp_level, cfg.amp_dtype)
    cell = TrainOneStepCell(WithLossCell(net, cfg), optimizer, loss_scale=cfg.loss_scale,
                            clip_norm=cfg.grad_clip_norm, dynamic_scale=cfg.loss_scale_type == "dynamic",
                            scale_window=cfg.loss_scale_window, scale_factor=cfg.loss_scale_factor)
    cell.set_train(True)
    return cell, lr


def build_train_step(cfg, steps_per_epoch, load_weights=None):
    """(train_cell, lr table): the network in training mode, ``load_weights(net)`` where given (before
    the mixed-precision casts), wrapped by ``build_train_cell``."""
    from src.maskrcnn_pointrend_r50 import MaskRcnnPointRend

    net = MaskRcnnPointRend(cfg, cfg.batch_size)
    net.set_train(True)
    if load_weights is not None:
        load_weights(net)
    return build_train_cell(cfg, net, steps_per_epoch)


def train_step_in_child(cfg, steps_per_epoch):
    """``compile_in_child``'s builder: the context and train cell of a single-process run, in a fresh
    process (weights are not loaded: the compiled graph does not depend on their values)."""
    setup_context(cfg)
    return build_train_step(cfg, steps_per_epoch)[0]


def train(cfg):
    from src.checkpoint_utils import load_pretrained, load_resume
    from src.dataset import TRAIN_COLUMNS, create_maskrcnn_dataset, ensure_mindrecord, resolve_num_classes
    from src.maskrcnn_pointrend_r50 import LOSS_NAMES
    from src.training.train_monitor import CheckpointSaver, RankLogger, StepMonitor, TrainingError

    setup_context(cfg)
    out_dir = os.path.abspath(cfg.save_checkpoint_path)
    log = RankLogger(os.path.join(out_dir, "train_logs"), cfg.rank_id)
    # rank 0 converts; the other ranks wait for a complete, up-to-date conversion
    mindrecord = ensure_mindrecord(cfg, is_training=True)
    if cfg.only_create_dataset:
        log(f"MindRecord ready: {mindrecord}")
        return
    resolve_num_classes(cfg, os.path.dirname(mindrecord))
    dataset = create_maskrcnn_dataset(cfg, mindrecord, batch_size=cfg.batch_size, is_training=True,
                                      rank_id=cfg.rank_id, rank_size=cfg.device_num,
                                      num_parallel_workers=cfg.num_parallel_workers)
    steps_per_epoch = dataset.get_dataset_size()
    if steps_per_epoch == 0:
        raise TrainingError(f"{mindrecord}: fewer images than one batch of {cfg.batch_size} per device")
    total_steps = steps_per_epoch * cfg.epoch_size

    load_weights = (lambda net: load_pretrained(net, cfg.pre_trained, log=log)) if cfg.pre_trained else None
    train_cell, lr = build_train_step(cfg, steps_per_epoch, load_weights)
    start = load_resume(train_cell, cfg.resume, log=log) if cfg.resume else 0
    if start >= total_steps:
        log(f"nothing to do: checkpoint step {start} >= {total_steps} steps")
        return

    monitor = StepMonitor(LOSS_NAMES, total_steps, cfg.batch_size * cfg.device_num, cfg.log_interval,
                          cfg.max_nan_steps, log)
    saver = CheckpointSaver(os.path.join(out_dir, f"ckpt_{cfg.rank_id}"), "pointrend", cfg.keep_checkpoint_max)
    save_every = max(1, int(round(cfg.save_checkpoint_epochs * steps_per_epoch)))
    if cfg.amp_level != "O0":
        log(f"mixed precision {cfg.amp_level} in {cfg.amp_dtype}")
        if cfg.amp_dtype == "float16" and cfg.loss_scale_type == "fixed" and cfg.loss_scale == 1:
            log("warning: float16 gradients can underflow without a loss scale; set --loss_scale_type=dynamic "
                "--loss_scale=65536 (or a fixed --loss_scale)")
    log(f"training {total_steps} steps ({cfg.epoch_size} epochs x {steps_per_epoch} steps, batch {cfg.batch_size} "
        f"x {cfg.device_num} devices), starting at step {start}, {cfg.device_target}")
    start_epoch, skip = divmod(start, steps_per_epoch)
    iterator = dataset.create_dict_iterator(num_epochs=cfg.epoch_size - start_epoch)
    step = start
    for epoch in range(start_epoch, cfg.epoch_size):
        for index, batch in enumerate(iterator):
            if epoch == start_epoch and index < skip:
                continue
            inputs = [batch[c] for c in TRAIN_COLUMNS]
            if step == start:
                if cfg.compile_in_child and not cfg.run_distribute:
                    compile_in_child(train_cell, inputs, train_step_in_child, (cfg, steps_per_epoch), log=log)
                else:
                    compile_then_release(train_cell, *inputs)
            losses = train_cell(*inputs)
            step += 1
            values = [float(x.asnumpy()) for x in losses]
            if train_cell.dynamic_scale and train_cell.overflow.asnumpy():
                log(f"step {step}: gradient overflow, update skipped; loss scale now "
                    f"{float(train_cell.scale.asnumpy()):g}")
            finite = monitor.step(step, float(lr[step - 1]), values)
            last = step == total_steps
            saving_rank = cfg.rank_id == 0 or cfg.save_checkpoint_all_ranks
            if cfg.save_checkpoint and saving_rank and finite and (step % save_every == 0 or last):
                path = saver.save(train_cell, epoch + 1, index + 1)
                log(f"saved {path}")
            if cfg.rank_id == 0 and (step % save_every == 0 or last):
                monitor.write_history(out_dir)
    log(f"done: {step} steps; loss curve {os.path.join(out_dir, 'loss_curve.png')}")
    log.close()


def main():
    from src.config import load_config
    train(load_config(usage=__doc__))


if __name__ == "__main__":
    run_main(main)
