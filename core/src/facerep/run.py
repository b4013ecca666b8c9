"""``facerep run``: config -> resolved components -> work dir -> pretraining -> evaluation."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import attrs
import yaml

from facerep.build import Resolved, build, resolve, resolve_run
from facerep.config import RunConfig, load_config, unstructure
from facerep.errors import ConfigError, PluginError
from facerep.plugins import PluginSet, get_plugins

__all__ = ["evaluate", "run", "write_run_record"]


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
    from facerep.cli import _table

    return _table([(r.path, r.kind, r.spec.name, f"{r.spec.dist} {r.spec.version}") for r in items], ("config path", "kind", "component", "provided by"))


def _backbone_config(cfg: RunConfig) -> Any:
    if cfg.backbone_weights is not None:
        from facerep.checkpoint import read_sidecar
        from facerep.config import ComponentConfig, structure
        from facerep.data.folder import expand_path

        return structure(read_sidecar(expand_path(cfg.backbone_weights))["backbone"], ComponentConfig, path="backbone")
    return cfg.backbone


def write_run_record(work_dir: Path, cfg: RunConfig, plugins: PluginSet) -> None:
    """The resolved config, the plugin manifest and the git revision, beside the results."""
    work_dir.mkdir(parents=True, exist_ok=True)
    (work_dir / "config.yaml").write_text(yaml.safe_dump(unstructure(cfg), sort_keys=False))
    (work_dir / "plugins.json").write_text(json.dumps(plugins.manifest(), indent=2))
    env = {"git": _git_revision(), "python": sys.version.split()[0], "platform": platform.platform(), "argv": sys.argv}
    try:
        import torch

        env["torch"] = torch.__version__
    except ImportError:  # pragma: no cover
        pass
    (work_dir / "environment.json").write_text(json.dumps(env, indent=2))


def evaluate(cfg: RunConfig, backbone: Any, plugins: PluginSet, out_dir: Path, weights: str) -> list[dict[str, Any]]:
    from facerep.eval.runner import evaluate_entries

    return evaluate_entries(cfg, backbone, plugins, out_dir, weights)


def run(config: str | Path, *, overrides: list[str] | tuple[str, ...] = (), dry_run: bool = False, work_dir: str | Path | None = None,
        resume: bool | str = False, stop_after: int | None = None, plugins: PluginSet | None = None,
        evaluate_only: bool = False, weights: str | None = None) -> dict[str, Any]:
    """``facerep run`` (pretrain and/or evaluate) and ``facerep eval`` (``evaluate_only``: skip the
    objective; ``weights``: an exported backbone to evaluate)."""
    plugins = plugins or get_plugins()
    cfg, _ = load_config(config, overrides)
    if evaluate_only:
        if not cfg.evaluate:
            raise ConfigError(f"{config}: no 'evaluate' entries")
        cfg = attrs.evolve(cfg, objective=None, backbone_weights=weights or cfg.backbone_weights)
    _check_required(cfg, plugins)
    resolved = resolve_run(cfg, plugins)
    if not resolved:
        raise ConfigError(f"{config}: nothing to do (no 'objective' to pretrain and no 'evaluate' entries)")
    print(component_table(resolved))
    if dry_run:
        return {"resolved": resolved}
    out = Path(work_dir or cfg.work_dir or Path("work_dirs") / cfg.name)
    write_run_record(out, cfg, plugins)
    summary: dict[str, Any] = {"work_dir": str(out)}
    import torch

    from facerep import dist

    start = time.perf_counter()
    # evaluation runs on rank 0 only; under torchrun the group starts (and ends) inside pretraining
    rank = dist.rank() if dist.is_distributed() else int(os.environ.get("RANK", "0"))
    if cfg.objective is not None:
        from facerep.engine.runner import pretrain

        path = pretrain(cfg, out, plugins, resume=resume, stop_after=stop_after)
        if path is None:
            print(f"stopped after {stop_after} steps; continue with: facerep run {config} --resume --work-dir {out}")
            return summary
        summary["backbone"] = str(path)
        summary["pretrain_seconds"] = round(time.perf_counter() - start, 1)
        from facerep.checkpoint import load_backbone

        backbone = load_backbone(path, plugins) if rank == 0 else None
    elif cfg.backbone_weights is not None:
        from facerep.checkpoint import load_backbone
        from facerep.data.folder import expand_path

        backbone = load_backbone(expand_path(cfg.backbone_weights), plugins)
    elif cfg.backbone is not None:
        torch.manual_seed(cfg.seed)  # "random weights" baselines are seeded too
        backbone = build(resolve("backbone", cfg.backbone, "backbone", plugins))
    else:
        raise ConfigError("evaluate: needs a 'backbone' (random weights) or an 'objective' to pretrain one")
    if cfg.evaluate and rank == 0:
        pretrained = cfg.objective is not None or cfg.backbone_weights is not None
        results = evaluate(cfg, backbone, plugins, out, "pretrained" if pretrained else "random init")
        if cfg.compare_random_init and pretrained:
            torch.manual_seed(cfg.seed)
            random_backbone = build(resolve("backbone", _backbone_config(cfg), "backbone", plugins))
            results += evaluate(cfg, random_backbone, plugins, out, "random init")
        summary["results"] = results
        summary["title"] = cfg.name
        from facerep.eval.report import write_report

        print("\n" + write_report(out, cfg.name, summary).split("\n## Every run")[0])
    return summary
