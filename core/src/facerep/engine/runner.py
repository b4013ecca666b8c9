"""Pretraining on mmengine: build the components of a run config, train, export the backbone.

mmengine provides the loop machinery, hooks, logging, schedulers, optim wrappers and DDP; facerep
provides the components (from plugins), a position-addressed data stream (exact resume, world-size
independent batches) and checkpoints that load without unpickling arbitrary objects.
"""

from __future__ import annotations

import itertools
import os
import time
from pathlib import Path
from typing import Any

import torch
from mmengine.hooks import Hook
from mmengine.runner import IterBasedTrainLoop, Runner
from torch.utils.data import DataLoader

from facerep import dist as fdist
from facerep.build import build, resolve
from facerep.checkpoint import export_backbone, from_plain, safe_checkpoint_loading, to_plain
from facerep.config import RunConfig
from facerep.engine.model import PretrainDDP, PretrainModel
from facerep.engine.optim import build_optim_wrapper, build_schedulers
from facerep.engine.stream import StreamSampler, ViewStream
from facerep.errors import ConfigError
from facerep.plugins import PluginSet

__all__ = ["StreamTrainLoop", "pretrain"]

_RUN_IDS = itertools.count()  # mmengine keys global instances by experiment name


class StreamTrainLoop(IterBasedTrainLoop):
    """Iteration loop that starts the sample stream at the resumed step instead of replaying it."""

    def run(self) -> torch.nn.Module:
        self.runner.call_hook("before_train")
        self.runner.call_hook("before_train_epoch")
        self.dataloader.sampler.start_step = self._iter
        self.dataloader_iterator = iter(self.dataloader)
        while self._iter < self._max_iters and not self.stop_training:
            self.runner.model.train()
            self.run_iter(next(self.dataloader_iterator))
        self.runner.call_hook("after_train_epoch")
        self.runner.call_hook("after_train")
        return self.runner.model


class StopAfterHook(Hook):
    """Ends this session after a number of steps (a checkpoint is written); resume continues."""

    def __init__(self, steps: int) -> None:
        self.steps = steps

    def after_train_iter(self, runner: Runner, batch_idx: int, data_batch: Any = None, outputs: Any = None) -> None:
        done = runner.iter + 1  # the loop increments its counter after this hook
        if done >= self.steps and done < runner.max_iters:
            name = f"iter_{done}.pth"
            runner.save_checkpoint(runner.work_dir, name)
            Path(runner.work_dir, "last_checkpoint").write_text(str(Path(runner.work_dir, name)))
            runner.train_loop.stop_training = True


class RunStateHook(Hook):
    """Saves RNG states and the plugin manifest in checkpoints; restores RNG on resume."""

    priority = "VERY_LOW"

    def __init__(self, manifest: list[dict[str, str]]) -> None:
        self.manifest = manifest

    def before_save_checkpoint(self, runner: Runner, checkpoint: dict[str, Any]) -> None:
        checkpoint["message_hub"] = to_plain(checkpoint["message_hub"])
        checkpoint["meta"] = to_plain(checkpoint["meta"])
        checkpoint["meta"]["facerep_plugins"] = self.manifest
        checkpoint["meta"]["torch_rng"] = torch.get_rng_state()
        if torch.cuda.is_available():
            checkpoint["meta"]["cuda_rng"] = torch.cuda.get_rng_state_all()

    def after_load_checkpoint(self, runner: Runner, checkpoint: dict[str, Any]) -> None:
        if "message_hub" in checkpoint:  # runner.resume loads it right after this hook
            checkpoint["message_hub"] = from_plain(checkpoint["message_hub"])
        meta = checkpoint.get("meta", {})
        if "torch_rng" in meta:
            torch.set_rng_state(meta["torch_rng"])
        if "cuda_rng" in meta and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(meta["cuda_rng"])
        saved = {(p["name"], p["version"]) for p in meta.get("facerep_plugins", []) if p.get("status") == "loaded"}
        now = {(p["name"], p["version"]) for p in self.manifest if p.get("status") == "loaded"}
        if saved and saved != now:
            runner.logger.warning(f"resuming with different plugins than the checkpoint was written with: saved {sorted(saved)}, now {sorted(now)}")


def _device(cfg: RunConfig) -> torch.device:
    want = cfg.train.device
    if want == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device: cuda requested but no CUDA device is available")
    if want == "cuda" or (want == "auto" and torch.cuda.is_available()):
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device("cpu")


def pretrain(cfg: RunConfig, work_dir: Path, plugins: PluginSet, *, resume: bool | str = False, stop_after: int | None = None) -> Path | None:
    """Train ``cfg.objective`` on ``cfg.data``; returns the exported backbone path (safetensors), or
    None when ``stop_after`` ended the session early (resume with ``resume=True``)."""
    if cfg.objective is None or cfg.data is None or cfg.backbone is None:
        raise ConfigError("pretraining needs 'data', 'backbone' and 'objective'")
    t = cfg.train
    if t.launcher == "pytorch" and not fdist.is_distributed():  # started by torchrun: env:// rendezvous
        if torch.cuda.is_available() and t.device != "cpu":
            from mmengine.dist import init_dist

            init_dist("pytorch", backend="nccl")  # also binds this process to its LOCAL_RANK GPU
        else:  # mmengine's init_dist insists on CUDA; gloo on CPU needs no device
            torch.distributed.init_process_group(backend="gloo")
    rank, world = fdist.rank(), fdist.world_size()
    device = _device(cfg)

    torch.manual_seed(cfg.seed)  # model initialisation is identical on every rank and run
    data_r = resolve("dataset", cfg.data, "data", plugins)
    backbone_r = resolve("backbone", cfg.backbone, "backbone", plugins)
    objective_r = resolve("objective", cfg.objective, "objective", plugins)
    dataset = build(data_r)
    backbone = build(backbone_r)
    objective = build(objective_r, backbone=backbone)
    model = PretrainModel(objective, precision=t.precision, channels_last=t.channels_last).to(device)
    if t.channels_last:
        model = model.to(memory_format=torch.channels_last)

    stream = ViewStream(dataset, objective.view_transform(), seed=cfg.seed)
    loader = DataLoader(
        stream,
        batch_size=t.batch_size,
        sampler=StreamSampler(t.batch_size, rank, world, total_steps=t.max_steps),
        num_workers=t.num_workers,
        pin_memory=device.type == "cuda",
        drop_last=True,
        persistent_workers=False,
        # no worker_init_fn calling cv2.setNumThreads: a run with it (after the threaded preload of
        # 14,000 faces) stalled before its first step; OpenCV's defaults are kept.
        prefetch_factor=4 if t.num_workers > 0 else None,
    )
    global_batch = t.batch_size * world
    optim_wrapper, lr = build_optim_wrapper(model, t, global_batch, device.type)
    if world > 1:
        model = PretrainDDP(module=model, device_ids=[device.index] if device.type == "cuda" else None, broadcast_buffers=False)

    if rank == 0:  # the effective batch and lr, before mmengine's logger exists
        print(f"facerep: global batch {global_batch} ({world} x {t.batch_size}), peak lr {lr:g}, {t.max_steps} steps, device {device}, {t.precision}")
    ckpt_every = t.checkpoint_every or t.max_steps
    runner = Runner(
        model=model,
        work_dir=str(work_dir),
        experiment_name=f"{cfg.name}_{time.strftime('%Y%m%d_%H%M%S')}_{os.getpid()}_{next(_RUN_IDS)}",
        train_dataloader=loader,
        train_cfg=dict(type=StreamTrainLoop, max_iters=t.max_steps),
        optim_wrapper=optim_wrapper,
        param_scheduler=build_schedulers(t, lr) or None,
        default_hooks=dict(
            logger=dict(type="LoggerHook", interval=t.log_every),
            checkpoint=dict(type="CheckpointHook", interval=ckpt_every, by_epoch=False, max_keep_ckpts=t.keep_checkpoints, save_last=True),
        ),
        custom_hooks=[RunStateHook(plugins.manifest())] + ([StopAfterHook(stop_after)] if stop_after else []),
        launcher="pytorch" if world > 1 else "none",
        env_cfg=dict(cudnn_benchmark=False, dist_cfg=dict(backend="nccl" if device.type == "cuda" else "gloo")),
        randomness=dict(seed=cfg.seed, deterministic=t.deterministic),
        resume=bool(resume),
        load_from=resume if isinstance(resume, str) else None,
        log_level="INFO",
    )
    with safe_checkpoint_loading():
        runner.train()
    finished = runner.iter >= t.max_steps
    out = work_dir / "backbone.safetensors"
    if finished and rank == 0:
        export_backbone(
            objective.exported_backbone(),
            out,
            backbone=cfg.backbone,
            method=objective_r.spec.name,
            extra={"run": cfg.name, "steps": t.max_steps, "plugins": plugins.manifest()},
        )
    if fdist.is_distributed():  # leave together: a rank exiting with live gloo/NCCL threads aborts
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    return out if finished else None
