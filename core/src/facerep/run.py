"""``facerep run``: config -> resolved components -> work dir -> pretraining -> evaluation."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import yaml

from facerep.build import Resolved, build, resolve, resolve_run
from facerep.config import RunConfig, load_config, unstructure
from facerep.errors import ConfigError, DataError, FacerepError, PluginError
from facerep.plugins import PluginSet, get_plugins

__all__ = ["component_table", "evaluate", "resolved_params_table", "run", "write_run_record"]


def _git_revision() -> str:
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=False)
        dirty = subprocess.run(["git", "status", "--porcelain"], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    if rev.returncode != 0:
        return "unknown (not a git checkout)"
    return rev.stdout.strip() + (" (dirty)" if dirty.stdout.strip() else "")


def _check_required(cfg: RunConfig, plugins: PluginSet) -> None:
    have = {r.dist.lower() for r in plugins.loaded}
    missing = [d for d in cfg.required_plugins if d.split(">")[0].split("=")[0].strip().lower() not in have]
    if missing:
        raise PluginError(f"required_plugins: not installed or not loaded: {', '.join(missing)} (loaded: {', '.join(sorted(have))})")


def component_table(items: list[Resolved]) -> str:
    from facerep.describe import text_table

    rows = [(r.path, r.kind, r.spec.name, f"{r.spec.dist} {r.spec.version}") for r in items]
    return text_table(rows, ("config path", "kind", "component", "provided by"))


def resolved_params_table(items: list[Resolved]) -> str:
    """Every resolved component's parameters, defaults filled in (``--dry-run``)."""
    lines = []
    for r in items:
        params = unstructure(r.params) if r.params is not None else {}
        flat = _flat(params)
        lines.append(f"{r.path} ({r.spec.name}):" + ("" if flat else " no parameters"))
        lines += [f"  {k} = {v!r}" for k, v in flat.items()]
    return "\n".join(lines)


def _flat(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict) and data:
        out: dict[str, Any] = {}
        for k, v in data.items():
            out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: data} if prefix else {}


def write_run_record(work_dir: Path, cfg: RunConfig, plugins: PluginSet) -> None:
    """The resolved config, the plugin manifest and the git revision, beside the results."""
    from facerep.workdir import atomic_write_text

    atomic_write_text(work_dir / "config.yaml", yaml.safe_dump(unstructure(cfg), sort_keys=False))
    atomic_write_text(work_dir / "plugins.json", json.dumps(plugins.manifest(), indent=2))
    env = {"git": _git_revision(), "python": sys.version.split()[0], "platform": platform.platform(), "argv": sys.argv}
    try:
        import torch

        env["torch"] = torch.__version__
    except ImportError:  # pragma: no cover
        pass
    atomic_write_text(work_dir / "environment.json", json.dumps(env, indent=2))


def _resume_checkpoint(out: Path, cfg: RunConfig, resume: bool | str) -> Path:
    """The checkpoint to continue from: this work dir's latest (or the one named), after checking
    that the config is the one the run was started with."""
    from facerep.config import structure
    from facerep.data.io import read_text
    from facerep.workdir import config_differences, latest_checkpoint

    saved_file = out / "config.yaml"
    if not saved_file.is_file():
        raise ConfigError(f"--resume: {out} holds no run to resume ({saved_file.name} not found); run without --resume to start one")
    try:
        saved = structure(yaml.safe_load(read_text(saved_file)), RunConfig, source=saved_file)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{saved_file}: not valid YAML: {exc}") from None
    diff = config_differences(unstructure(saved), unstructure(cfg))
    if diff:
        raise ConfigError(
            f"--resume: the config differs from the one {out} was started with ({saved_file}):\n  " + "\n  ".join(diff)
            + f"\nresume with the run's own config: facerep run {saved_file} --resume --work-dir {out}"
            + "\n(or start a new run in another --work-dir)"
        )
    if isinstance(resume, str):
        path = Path(resume)
        if not path.is_file():
            raise DataError(f"--resume {resume}: checkpoint not found")
        return path
    return latest_checkpoint(out)


def _claim_work_dir(out: Path, *, resume: bool | str, overwrite: bool, rank: int, pretraining: bool) -> bool:
    """Create and lock the work dir; refuse one holding another run unless resuming/overwriting.
    Returns whether an earlier run's files are to be replaced (once the new run starts)."""
    from facerep.workdir import holds_run, lock_work_dir, make_work_dir, remove_temporary, settle_previous

    if rank != 0:  # rank 0 owns the work dir under torchrun
        return False
    make_work_dir(out)
    lock_work_dir(out)
    remove_temporary(out)
    for line in settle_previous(out):  # an --overwrite run killed before it could put things in order
        print(f"facerep: {line}", file=sys.stderr)
    found = holds_run(out)
    trained = [n for n in found if n.endswith(".pth") or n == "backbone.safetensors"]
    if trained and not pretraining:  # even --overwrite: an evaluation must not delete trained weights
        raise ConfigError(f"work dir {out} holds a pretraining run ({', '.join(trained[:3])}); write the evaluation to another --work-dir")
    if found and not resume and not overwrite:
        raise ConfigError(
            f"work dir {out} already holds a run ({', '.join(found[:4])}); continue it with --resume, "
            f"write to another --work-dir, or replace it on purpose with --overwrite"
        )
    return bool(found) and not resume


def evaluate(cfg: RunConfig, backbone: Any, plugins: PluginSet, out_dir: Path, weights: str) -> list[dict[str, Any]]:
    from facerep.eval.runner import evaluate_entries

    return evaluate_entries(cfg, backbone, plugins, out_dir, weights)


def run(config: str | Path, *, overrides: list[str] | tuple[str, ...] = (), dry_run: bool = False, work_dir: str | Path | None = None,
        resume: bool | str = False, stop_after: int | None = None, plugins: PluginSet | None = None,
        evaluate_only: bool = False, weights: str | None = None, overwrite: bool = False, verbose: bool = False,
        only: list[str] | tuple[str, ...] = (), cost: bool = True, gpu_tflops: float | None = None, gpu_util: float = 0.4,
        processes: int | None = None) -> dict[str, Any]:
    """``facerep run`` (pretrain and/or evaluate) and ``facerep eval`` (``evaluate_only``: skip the
    objective; ``weights``: an exported backbone to evaluate; ``only``: the ``evaluate`` entries of
    these names, to split a grid into jobs that ``facerep report OUT --merge`` joins again).

    ``resume``: continue this work dir's run from its latest checkpoint (or the checkpoint path
    given); the config must equal the run's saved ``config.yaml``. ``overwrite``: replace a run the
    work dir already holds (otherwise refused). ``dry_run`` with ``cost`` also prints what the run
    will cost (:mod:`facerep.cost`: parameters, FLOPs, activation memory, time on this host and on a
    GPU of ``gpu_tflops`` at ``gpu_util``, for ``processes`` processes)."""
    plugins = plugins or get_plugins()
    cfg, _ = load_config(config, overrides)
    if evaluate_only:
        if not cfg.evaluate:
            raise ConfigError(f"{config}: no 'evaluate' entries")
        cfg = attrs.evolve(cfg, objective=None, backbone_weights=weights or cfg.backbone_weights)
    if only:
        names = [e.name for e in cfg.evaluate]
        unknown = sorted(set(only) - set(names))
        if unknown:
            raise ConfigError(f"{config}: no evaluate entry named {', '.join(unknown)} (entries: {', '.join(dict.fromkeys(names))})")
        cfg = attrs.evolve(cfg, evaluate=tuple(e for e in cfg.evaluate if e.name in only))
    if resume and cfg.objective is None:
        raise ConfigError(f"--resume: {config} has no 'objective': only pretraining resumes (evaluation reruns)")
    _check_required(cfg, plugins)
    resolved = resolve_run(cfg, plugins)
    if not resolved:
        raise ConfigError(f"{config}: nothing to do (no 'objective' to pretrain and no 'evaluate' entries)")
    print(component_table(resolved))
    if dry_run:
        print("\n" + resolved_params_table(resolved))
        if cfg.objective is not None and cost:
            from facerep.cost import estimate_cost, format_cost

            try:
                print("\n" + format_cost(estimate_cost(cfg, plugins, gpu_tflops=gpu_tflops, gpu_util=gpu_util, world_size=processes)))
            except FacerepError as exc:  # e.g. a teacher file that is not on this machine: the rest of the dry run stands
                print(f"\ncost: not estimated: {exc}")
        return {"resolved": resolved}
    out = Path(work_dir or cfg.work_dir or Path("work_dirs") / cfg.name)
    from facerep import dist

    # evaluation runs on rank 0 only; under torchrun the group starts (and ends) inside pretraining
    rank = dist.rank() if dist.is_distributed() else int(os.environ.get("RANK", "0"))
    try:
        replace = _claim_work_dir(out, resume=resume, overwrite=overwrite, rank=rank, pretraining=cfg.objective is not None)
        return _run_in(out, cfg, plugins, rank=rank, resume=resume, stop_after=stop_after, replace=replace, verbose=verbose)
    finally:
        from facerep.workdir import release_work_dir

        release_work_dir(out)


def _run_in(out: Path, cfg: RunConfig, plugins: PluginSet, *, rank: int, resume: bool | str, stop_after: int | None,
            replace: bool, verbose: bool) -> dict[str, Any]:
    """Run in the claimed work dir. With ``replace`` (``--overwrite``) the earlier run's files are
    moved aside as this run starts and deleted once it has a checkpoint (or, without pretraining,
    has finished); a failure before that puts them back."""
    from facerep.workdir import set_aside_run, settle_previous

    aside: list[Path] = []

    def record() -> None:  # once the run really starts: a run that fails to start changes nothing
        if replace:
            folder = set_aside_run(out)
            if folder is not None:
                aside.append(folder)
                print(f"facerep: --overwrite: the earlier run's files are kept in {folder} until this run writes its first checkpoint")
        write_run_record(out, cfg, plugins)

    def settle(finished: bool, failed: bool = False) -> None:
        for folder in aside:
            for line in settle_previous(out, folder, finished=finished):
                print(f"facerep: {line}", file=sys.stderr if failed else sys.stdout)
        aside.clear()

    try:
        return _run_steps(out, cfg, plugins, rank=rank, resume=resume, stop_after=stop_after, verbose=verbose, record=record,
                          settle=settle)
    except BaseException:
        settle(finished=False, failed=True)  # back, unless this run has a checkpoint of its own
        raise


def _run_steps(out: Path, cfg: RunConfig, plugins: PluginSet, *, rank: int, resume: bool | str, stop_after: int | None,
               verbose: bool, record: Callable[[], None], settle: Callable[..., None]) -> dict[str, Any]:
    import torch

    resume_from = _resume_checkpoint(out, cfg, resume) if resume and rank == 0 else None
    if resume and rank != 0:  # every rank loads the checkpoint rank 0 chose (same file system)
        from facerep.workdir import latest_checkpoint

        resume_from = Path(resume) if isinstance(resume, str) else latest_checkpoint(out)

    summary: dict[str, Any] = {"work_dir": str(out)}
    start = time.perf_counter()
    if cfg.objective is not None:
        from facerep.engine.runner import pretrain

        path = pretrain(cfg, out, plugins, resume_from=resume_from, stop_after=stop_after, on_start=None if resume else record,
                        on_checkpoint=lambda: settle(False), verbose=verbose)
        settle(path is not None)  # finished, or stopped at a checkpoint: the replaced run's files go
        if path is None:
            if rank == 0:
                print(f"stopped after step {stop_after}; continue with: facerep run {out / 'config.yaml'} --resume --work-dir {out}")
            return summary
        summary["backbone"] = str(path)
        summary["pretrain_seconds"] = round(time.perf_counter() - start, 1)
        from facerep.checkpoint import load_backbone

        backbone = load_backbone(path, plugins) if rank == 0 else None
    elif cfg.backbone_weights is not None:
        from facerep.checkpoint import load_backbone
        from facerep.data.folder import expand_path

        backbone = load_backbone(expand_path(cfg.backbone_weights), plugins)
        record()
    elif cfg.backbone is not None:
        torch.manual_seed(cfg.seed)  # "random weights" baselines are seeded too
        backbone = build(resolve("backbone", cfg.backbone, "backbone", plugins))
        record()
    else:
        raise ConfigError("evaluate: needs a 'backbone' (random weights) or an 'objective' to pretrain one")
    if cfg.evaluate and rank == 0:
        pretrained = cfg.objective is not None or cfg.backbone_weights is not None
        # rows are named for what they are: a parameter-free backbone (raw pixels) has no weights to be random
        free = sum(p.numel() for p in backbone.parameters()) == 0 and cfg.backbone is not None
        label = "pretrained" if pretrained else (f"{cfg.backbone.name} (no weights)" if free else "random init")
        results = evaluate(cfg, backbone, plugins, out, label)
        if cfg.compare_random_init and pretrained:
            from facerep.eval.runner import backbone_component

            torch.manual_seed(cfg.seed)
            random_backbone = build(resolve("backbone", backbone_component(cfg), "backbone", plugins))
            results += evaluate(cfg, random_backbone, plugins, out, "random init")
        summary["results"] = results
        summary["title"] = cfg.name
        from facerep.eval.report import write_report

        print("\n" + write_report(out, cfg.name, summary).split("\n## Every run")[0])
    settle(True)
    return summary
