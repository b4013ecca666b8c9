"""Pretraining on mmengine: build the components of a run config, train, export the backbone.

mmengine provides the loop machinery, hooks, logging, schedulers, optim wrappers and DDP; facerep
provides the components (from plugins), a position-addressed data stream (exact resume, world-size
independent batches) and checkpoints that load without unpickling arbitrary objects.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import numpy as np
import torch
from mmengine.hooks import Hook
from mmengine.runner import IterBasedTrainLoop, Runner
from torch.utils.data import DataLoader

from facerep import dist as fdist
from facerep.build import build, resolve
from facerep.checkpoint import check_fits, export_backbone, export_module, from_plain, read_checkpoint, safe_checkpoint_loading, to_plain
from facerep.config import RunConfig, unstructure
from facerep.engine.model import PretrainDDP, PretrainModel, compile_backbones, effective_precision
from facerep.engine.optim import build_optim_wrapper, build_schedulers
from facerep.engine.progress import ProgressHook, quiet_terminal, visualizer_cfg
from facerep.engine.stream import StreamSampler, ViewStream
from facerep.errors import ConfigError
from facerep.plugins import PluginSet
from facerep.workdir import atomic_write, atomic_write_text, checkpoints, config_differences

__all__ = ["CheckpointHook", "StreamTrainLoop", "pretrain", "save_checkpoint"]

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


class FacerepRunner(Runner):
    """mmengine's Runner without its ``<timestamp>.py`` config dump: facerep configs are YAML data,
    and the work dir's ``config.yaml`` is the run's record."""

    def dump_config(self) -> None:
        return None


class CheckpointHook(Hook):
    """Saves resumable checkpoints after a step: every ``every`` steps, at ``stop_after`` (then ends
    the session) and at the last step.

    A checkpoint written after step ``s`` records ``iter = s``: resuming trains step ``s + 1`` next.
    Each file is written atomically (temporary file, fsync, rename) and only then named in
    ``last_checkpoint`` (by file name, relative to the work dir); a crash at any moment leaves the
    previous checkpoint as the latest. mmengine's own CheckpointHook is not used: its by-epoch
    default mis-records the step of an interval-less save, and it writes in place.
    """

    priority = "VERY_LOW"  # after the logger and the schedulers have seen the step

    def __init__(self, every: int, keep: int, stop_after: int | None = None, on_checkpoint: Callable[[], None] | None = None) -> None:
        self.every = every
        self.keep = keep
        self.stop_after = stop_after
        self.on_checkpoint = on_checkpoint

    def after_train_iter(self, runner: Runner, batch_idx: int, data_batch: Any = None, outputs: Any = None) -> None:
        done = runner.iter + 1  # the loop increments its counter after this hook
        stop = self.stop_after is not None and done >= self.stop_after and done < runner.max_iters
        if stop or done == runner.max_iters or (self.every and done % self.every == 0):
            save_checkpoint(runner, Path(runner.work_dir), done, self.keep)
            if self.on_checkpoint is not None and fdist.rank() == 0:
                self.on_checkpoint()
        if stop:
            runner.train_loop.stop_training = True


def save_checkpoint(runner: Runner, work_dir: Path, step: int, keep: int) -> Path:
    """Write ``iter_<step>.pth`` atomically, point ``last_checkpoint`` at it, keep the newest ``keep``."""
    path = work_dir / f"iter_{step}.pth"
    if fdist.rank() == 0:
        with atomic_write(path) as tmp:
            runner.save_checkpoint(str(work_dir), tmp.name, by_epoch=False)
        atomic_write_text(work_dir / "last_checkpoint", path.name)
        for old in checkpoints(work_dir)[:-keep]:
            old.unlink()
    return path


class RunStateHook(Hook):
    """Saves RNG states and the plugin manifest in checkpoints; restores RNG on resume."""

    priority = "VERY_LOW"

    def __init__(self, manifest: list[dict[str, str]]) -> None:
        self.manifest = manifest

    def before_save_checkpoint(self, runner: Runner, checkpoint: dict[str, Any]) -> None:
        checkpoint["message_hub"] = to_plain(checkpoint["message_hub"])
        checkpoint["meta"] = to_plain(checkpoint["meta"])
        checkpoint["meta"]["facerep_plugins"] = self.manifest
        checkpoint["meta"]["world_size"] = fdist.world_size()  # a resume must keep the global batch
        checkpoint["meta"]["torch_rng"] = torch.get_rng_state()
        checkpoint["meta"]["numpy_rng"] = _numpy_rng_plain()
        checkpoint["meta"]["python_rng"] = _python_rng_plain()
        if torch.cuda.is_available():
            checkpoint["meta"]["cuda_rng"] = torch.cuda.get_rng_state_all()

    def after_load_checkpoint(self, runner: Runner, checkpoint: dict[str, Any]) -> None:
        if "message_hub" in checkpoint:  # runner.resume loads it right after this hook
            checkpoint["message_hub"] = from_plain(checkpoint["message_hub"])
        meta = checkpoint.get("meta", {})
        if "torch_rng" in meta:
            torch.set_rng_state(meta["torch_rng"])
        if "numpy_rng" in meta:
            name, keys, pos, has_gauss, cached = meta["numpy_rng"]
            np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
        if "python_rng" in meta:
            version, state, gauss = meta["python_rng"]
            random.setstate((version, tuple(state), gauss))
        if "cuda_rng" in meta and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(meta["cuda_rng"])
        saved = {(p["name"], p["version"]) for p in meta.get("facerep_plugins", []) if p.get("status") == "loaded"}
        now = {(p["name"], p["version"]) for p in self.manifest if p.get("status") == "loaded"}
        if saved and saved != now:
            runner.logger.warning(f"resuming with different plugins than the checkpoint was written with: saved {sorted(saved)}, "
                                  f"now {sorted(now)}")


def _numpy_rng_plain() -> list[Any]:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return [name, keys.tolist(), int(pos), int(has_gauss), float(cached)]


def _python_rng_plain() -> list[Any]:
    version, state, gauss = random.getstate()
    return [version, list(state), gauss]


def _check_objective_manifest(saved_file: Path, manifest: dict[str, Any]) -> None:
    """A resumed run must see what its first session saw beyond the config: e.g. MCF's teacher
    file, whose SHA-256 is in the manifest (a file replaced under the same path would otherwise go
    unnoticed and mix two teachers in one run)."""
    if not saved_file.is_file():  # runs of objectives without a manifest, or from before API 1.2
        return
    saved = json.loads(saved_file.read_text(encoding="utf-8"))
    diff = config_differences(saved, json.loads(json.dumps(manifest, default=str)), may_change=())
    if diff:
        raise ConfigError(f"--resume: the objective's manifest differs from the one the run was started with ({saved_file}):\n  "
                          + "\n  ".join(diff) + "\n(restore those files, or start a new run in another --work-dir)")


def _device(cfg: RunConfig) -> torch.device:
    want = cfg.train.device
    if want == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device: cuda requested but no CUDA device is available")
    if want == "cuda" or (want == "auto" and torch.cuda.is_available()):
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device("cpu")


def pretrain(cfg: RunConfig, work_dir: Path, plugins: PluginSet, *, resume_from: Path | None = None, stop_after: int | None = None,
             on_start: Callable[[], None] | None = None, on_checkpoint: Callable[[], None] | None = None,
             verbose: bool = False) -> Path | None:
    """Train ``cfg.objective`` on ``cfg.data``; returns the exported backbone path (safetensors), or
    None when ``stop_after`` ended the session early.

    ``resume_from``: a checkpoint of this run to continue from (checked to fit the model first).
    ``on_start``: called on rank 0 once everything is built and checked, right before the first
    step (the run record is written then, so a run that fails to start leaves the work dir as it was).
    ``on_checkpoint``: called on rank 0 after each checkpoint is written (e.g. to drop the run that
    ``--overwrite`` set aside, once this run can be resumed on its own).
    ``verbose``: mmengine's full log on the terminal too (it always goes to the work dir's log file).
    """
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
    manifest = objective.manifest() if hasattr(objective, "manifest") else {}  # optional, API 1.2
    precision, why = effective_precision(t.precision, device.type)
    if why and rank == 0:
        print(f"facerep: warning: {why}")
    t = attrs.evolve(t, precision=precision)  # the optim wrapper (fp16's loss scaler) and the log line follow
    model = PretrainModel(objective, precision=precision, channels_last=t.channels_last, accumulate_steps=t.accumulate_steps).to(device)
    if t.channels_last:
        model = model.to(memory_format=torch.channels_last)

    stream = ViewStream(dataset, objective.view_transform(), seed=cfg.seed)
    loader = DataLoader(
        stream,
        batch_size=t.batch_size * t.accumulate_steps,  # one loader batch per optimizer step, split by the train step
        sampler=StreamSampler(t.batch_size, rank, world, total_steps=t.max_steps, accumulate_steps=t.accumulate_steps),
        num_workers=t.num_workers,
        pin_memory=device.type == "cuda",
        drop_last=True,
        persistent_workers=False,
        # no worker_init_fn calling cv2.setNumThreads: a run with it (after the threaded preload of
        # 14,000 faces) stalled before its first step; OpenCV's defaults are kept.
        prefetch_factor=4 if t.num_workers > 0 else None,
        # its own generator: creating the loader's iterator draws a seed, which must not advance the
        # global RNG (a resumed session creates one more iterator than an uninterrupted run)
        generator=torch.Generator().manual_seed(cfg.seed),
    )
    global_batch = t.batch_size * t.accumulate_steps * world  # samples per optimizer step
    if t.accumulate_steps > 1 and not hasattr(objective, "after_micro_batch") and rank == 0:
        print(f"facerep: warning: {objective_r.spec.name} has no after_micro_batch (API 1.4): state it updates after the optimizer "
              f"step (queues, momentum encoders) follows the step, not each of the {t.accumulate_steps} micro-batches")
    if t.sync_bn and world > 1:
        from facerep.engine.sync_bn import convert_sync_batchnorm

        model, n_bn = convert_sync_batchnorm(model, cuda=device.type == "cuda")
        if rank == 0:
            print(f"facerep: sync_bn: {n_bn} BatchNorm layers normalise over the global batch of {world} processes")
    optim_wrapper, lr = build_optim_wrapper(model, t, global_batch, device.type)
    compiled = compile_backbones(objective, warn=lambda msg: print(f"facerep: warning: {msg}") if rank == 0 else None) if t.compile else []
    if world > 1:
        model = PretrainDDP(module=model, device_ids=[device.index] if device.type == "cuda" else None, broadcast_buffers=False)

    if rank == 0:  # the effective batch and lr, before mmengine's logger exists
        accum = f" x {t.accumulate_steps} micro-batches" if t.accumulate_steps > 1 else ""
        print(f"facerep: global batch {global_batch} ({world} x {t.batch_size}{accum}), peak lr {lr:g}, {t.max_steps} steps, "
              f"device {device}, {t.precision}" + (f", compiled: {', '.join(compiled)} (the first steps compile)" if compiled else ""))
    if resume_from is not None:  # before the Runner exists: a refused resume leaves no trace in the work dir
        saved = read_checkpoint(resume_from)
        saved_world = saved.get("meta", {}).get("world_size")
        if saved_world is not None and saved_world != world:
            raise ConfigError(f"--resume: {resume_from} was written by a run of {saved_world} process(es), this one has {world}: "
                              f"train.batch_size is per process, so the global batch would change from "
                              f"{t.batch_size * t.accumulate_steps * saved_world} to {global_batch} in the middle of the run; "
                              f"resume with {saved_world} processes (docs/scaling.md)")
        check_fits(saved, model.module if world > 1 else model, resume_from)
        _check_objective_manifest(work_dir / "objective.json", manifest)
    ckpt_every = t.checkpoint_every
    visualizer = visualizer_cfg(t.log_backends, work_dir, run_name=cfg.name)
    with quiet_terminal(verbose):
        runner = FacerepRunner(
            model=model,
            work_dir=str(work_dir),
            experiment_name=f"{cfg.name}_{time.strftime('%Y%m%d_%H%M%S')}_{os.getpid()}_{next(_RUN_IDS)}",
            train_dataloader=loader,
            train_cfg=dict(type=StreamTrainLoop, max_iters=t.max_steps),
            optim_wrapper=optim_wrapper,
            param_scheduler=build_schedulers(t, lr) or None,
            default_hooks=dict(logger=dict(type="LoggerHook", interval=t.log_every), checkpoint=None),
            log_processor=dict(by_epoch=False),  # "Iter(train) [s/S]": the stream has no epochs
            custom_hooks=[ProgressHook(every=t.log_every, bar=False if verbose else None), RunStateHook(plugins.manifest()),
                          CheckpointHook(ckpt_every, t.keep_checkpoints, stop_after, on_checkpoint)],
            visualizer=visualizer,
            launcher="pytorch" if world > 1 else "none",
            env_cfg=dict(cudnn_benchmark=False, dist_cfg=dict(backend="nccl" if device.type == "cuda" else "gloo")),
            randomness=dict(seed=cfg.seed, deterministic=t.deterministic),
            resume=resume_from is not None,  # an explicit path: mmengine never searches for one itself
            load_from=str(resume_from) if resume_from is not None else None,
            log_level="INFO",
        )
        if rank == 0:
            if on_start is not None:
                on_start()
            if manifest:  # what the params do not say, e.g. a frozen teacher's file and hash
                from facerep.workdir import atomic_write_text

                atomic_write_text(work_dir / "objective.json", json.dumps(manifest, indent=2, default=str))
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
            extra={"run": cfg.name, "steps": t.max_steps, "plugins": plugins.manifest(), **({"objective": manifest} if manifest else {})},
        )
        exports = objective.exports() if hasattr(objective, "exports") else {}  # optional, API 1.2
        for name, module in exports.items():
            export_module(module, work_dir / f"{name}.safetensors",
                          {"module": name, "method": objective_r.spec.name, "objective": unstructure(cfg.objective), "run": cfg.name,
                           "steps": t.max_steps, "backbone_file": out.name})
    if fdist.is_distributed():  # leave together: a rank exiting with live gloo/NCCL threads aborts
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    return out if finished else None
