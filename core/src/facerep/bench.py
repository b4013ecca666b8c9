"""``facerep bench SUITE``: every method pretrained on one budget, every backbone evaluated on the
same grid, one leaderboard.

A suite (YAML, structured into :class:`BenchSuite`) names the methods (presets or run configs, any
installed objective), one pretraining budget for all of them, an evaluation config whose
``evaluate:`` entries every row runs, and the baselines. ``facerep bench``:

1. resolves each method's run config with the budget applied and keys it by the resolved config
   and the versions of the installed plugins; an exported backbone under that key is reused, a
   checkpoint is resumed (``facerep run --resume``), anything else is trained;
2. evaluates every row — each method, a random-init copy of each distinct backbone, the pixel
   baselines — on the same few-shot subsets (they depend only on the task, the data, the fraction
   and the seed), skipping rows whose results are on disk for the same key;
3. writes ``leaderboard.md``, ``leaderboard.json`` and one plot per fraction
   (:mod:`facerep.eval.leaderboard`).

Every stage writes into its own work dir, so a crash or Ctrl-C loses at most the stage in flight:
the next invocation resumes pretraining from its last checkpoint and redoes only unfinished rows.
"""

from __future__ import annotations

import copy
import hashlib
import json
import time
from pathlib import Path
from typing import Any

import attrs
import yaml

from facerep.build import resolve_run
from facerep.config import RunConfig, apply_overrides, find_config, positive, read_yaml, structure, unstructure
from facerep.errors import ConfigError, DataError, FacerepError
from facerep.plugins import PluginSet, get_plugins

__all__ = ["Baselines", "BenchBudget", "BenchMethod", "BenchSuite", "PixelBaseline", "run_bench"]


@attrs.frozen
class BenchBudget:
    """One pretraining budget for every method; exactly one field is set.

    Attributes:
        steps: optimizer steps.
        images: images seen (steps = images // global batch of each method).
        minutes: wall-clock minutes of pretraining: each method's step time is measured on a short
            calibration run first, and the steps it gives are remembered in ``bench_state.json``.
    """

    steps: int | None = attrs.field(default=None, validator=positive)
    images: int | None = attrs.field(default=None, validator=positive)
    minutes: float | None = attrs.field(default=None, validator=positive)

    def __attrs_post_init__(self) -> None:
        if sum(v is not None for v in (self.steps, self.images, self.minutes)) != 1:
            raise ConfigError("budget: give exactly one of steps, images, minutes")


@attrs.frozen
class BenchMethod:
    """A row of the leaderboard that is pretrained.

    Attributes:
        name: the row's name in the leaderboard.
        config: a run config file or a plugin preset (``frl/moco_v2_tiny``).
        overrides: ``key=value`` overrides applied to it (as ``-o``).
    """

    name: str
    config: str
    overrides: tuple[str, ...] = ()


@attrs.frozen
class PixelBaseline:
    """Raw pixels as features (``core.pixels``): ``size`` x ``size``, grey or RGB."""

    size: int = attrs.field(default=24, validator=positive)
    grey: bool = True


@attrs.frozen
class Baselines:
    """Rows that are not pretrained.

    Attributes:
        random_init: a seeded random-weights copy of every distinct backbone the methods use.
        pixels: raw-pixel rows (the FER2013 row that beats pooled features at CPU scale).
    """

    random_init: bool = True
    pixels: tuple[PixelBaseline, ...] = (PixelBaseline(),)


@attrs.frozen
class BenchSuite:
    """A ``facerep bench`` suite.

    Attributes:
        name: the suite's name (default work dir ``work_dirs/bench/<name>``).
        methods: the pretrained rows.
        budget: the pretraining budget every method gets.
        evaluate: an eval config (file or preset) whose ``evaluate:`` entries every row runs.
        evaluate_overrides: overrides applied to that config (e.g. ``evaluate.0.seeds=[0,1,2]``).
        baselines: the rows that are not pretrained.
        seed: the seed of every pretraining run and of the random-init rows.
        work_dir: where the suite writes (default ``work_dirs/bench/<name>``).
    """

    name: str
    methods: tuple[BenchMethod, ...]
    budget: BenchBudget
    evaluate: str
    evaluate_overrides: tuple[str, ...] = ()
    baselines: Baselines = Baselines()
    seed: int = 0
    work_dir: str | None = None


def load_suite(path: str | Path, overrides: tuple[str, ...] | list[str] = ()) -> BenchSuite:
    suite = structure(apply_overrides(read_yaml(path), overrides), BenchSuite, source=path)
    if not suite.methods:
        raise ConfigError(f"{path}: methods: give at least one method to pretrain")
    names = [m.name for m in suite.methods]
    if len(set(names)) != len(names):
        raise ConfigError(f"{path}: methods: row names must be unique, got {names}")
    return suite


def _locate(ref: str, base: Path) -> Path:
    """A config named in a suite: relative to the suite's folder (like ``base:``), else a path from
    the working directory or a plugin preset."""
    local = base / ref
    return local if not Path(ref).is_absolute() and local.is_file() else find_config(ref)


def _key(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:10]


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)


def _plugin_versions(plugins: PluginSet) -> list[tuple[str, str, str]]:
    return sorted((r.name, r.dist, r.version) for r in plugins.loaded)


@attrs.define
class _Stage:
    """One unit of work: a pretraining run or a row's evaluation."""

    kind: str  # "pretrain" | "eval"
    row: str
    work_dir: Path
    config: Path
    weights: Path | None = None
    steps: int | None = None
    random_row: str | None = None  # a method's random-init row (same backbone)


class _State:
    """``bench_state.json``: the calibrated step counts of a ``minutes`` budget, written atomically.
    (Whether a stage is finished is read from its work dir, never stored.)"""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data: dict[str, Any] = {"calibrated_steps": {}}
        if path.is_file():
            try:
                self.data = json.loads(path.read_text())
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise DataError(f"{path}: not valid JSON ({exc}); delete it to calibrate the methods again") from None
            if not isinstance(self.data.get("calibrated_steps"), dict):
                raise DataError(f"{path}: no 'calibrated_steps' mapping; delete it to calibrate the methods again")

    def save(self) -> None:
        from facerep.workdir import atomic_write_text

        atomic_write_text(self.path, json.dumps(self.data, indent=2))


def _method_config(method: BenchMethod, suite: BenchSuite, where: str, base: Path) -> dict[str, Any]:
    raw = apply_overrides(read_yaml(_locate(method.config, base)), method.overrides)
    raw.pop("evaluate", None)  # the suite evaluates every row the same way
    raw.pop("work_dir", None)
    raw["compare_random_init"] = False
    raw["seed"] = suite.seed
    cfg = structure(raw, RunConfig, source=where)
    if cfg.objective is None:
        raise ConfigError(f"{where}: {method.config} has no 'objective' to pretrain")
    return raw


def _with_steps(raw: dict[str, Any], steps: int) -> dict[str, Any]:
    out = json.loads(json.dumps(raw))
    train = out.setdefault("train", {})
    train["max_steps"] = steps
    if not train.get("checkpoint_every"):  # a killed bench resumes pretraining from here
        train["checkpoint_every"] = max(10, steps // 10)
    return out


def _calibrate(raw: dict[str, Any], bench_dir: Path, row: str, plugins: PluginSet, skip: int = 16, steps: int = 32) -> float:
    """Seconds per training step of a method, from a short run: the time between the checkpoints
    written after step ``skip`` and after step ``steps``. Neither building the model and the data
    (preloading a face pool takes longer than many steps) nor the first steps' warm-up is counted;
    the interval holds one checkpoint write, as the bench's own runs write one every tenth of the run."""
    from facerep.run import run

    probe = bench_dir / "calibrate" / _slug(row)
    cfg_path = bench_dir / "configs" / f"calibrate_{_slug(row)}.yaml"
    cfg_path.parent.mkdir(parents=True, exist_ok=True)
    data = _with_steps(raw, steps)
    data["train"].update(checkpoint_every=skip, keep_checkpoints=2)
    cfg_path.write_text(yaml.safe_dump(data, sort_keys=False))
    run(cfg_path, work_dir=probe, plugins=plugins, overwrite=True)
    first, last = (probe / f"iter_{s}.pth" for s in (skip, steps))
    return max(1e-6, (last.stat().st_mtime - first.stat().st_mtime) / (steps - skip))


def plan(suite: BenchSuite, bench_dir: Path, plugins: PluginSet, state: _State, *, calibrate: bool = True,
         base: Path = Path()) -> list[_Stage]:
    """The stages of the suite, in order, with their work dirs and configs written to disk.
    ``base``: the suite file's folder (relative config paths in the suite start there)."""
    versions = _plugin_versions(plugins)
    configs = bench_dir / "configs"
    configs.mkdir(parents=True, exist_ok=True)
    eval_raw = apply_overrides(read_yaml(_locate(suite.evaluate, base)), suite.evaluate_overrides)
    evaluate = eval_raw.get("evaluate")
    if not evaluate:
        raise ConfigError(f"evaluate: {suite.evaluate} has no 'evaluate' entries")
    structure({"evaluate": evaluate}, RunConfig, source=suite.evaluate)  # fail early, with the path
    stages: list[_Stage] = []
    backbones: dict[str, dict[str, Any]] = {}
    for i, method in enumerate(suite.methods):
        where = f"methods.{i}"
        raw = _method_config(method, suite, where, base)
        batch = int(raw.get("train", {}).get("batch_size", 32))
        b = suite.budget
        if b.steps is not None:
            steps = b.steps
        elif b.images is not None:
            steps = max(1, b.images // batch)
        else:
            seen = state.data["calibrated_steps"].get(method.name)
            if seen is None:
                if not calibrate:  # --dry-run: validate with one step; the real count comes from calibration
                    seen = 1
                else:
                    print(f"[bench] calibrating {method.name}: seconds per step for a {b.minutes:g}-minute budget", flush=True)
                    per_step = _calibrate(raw, bench_dir, method.name, plugins)
                    seen = max(1, int(b.minutes * 60 / per_step))
                    print(f"[bench] {method.name}: {per_step:.3f} s per step -> {seen} steps", flush=True)
                    state.data["calibrated_steps"][method.name] = seen
                    state.save()
            steps = seen
        data = _with_steps(raw, steps)
        cfg = structure(data, RunConfig, source=f"{where} ({method.config})")
        try:  # every component and parameter checked before anything trains
            resolve_run(cfg, plugins)
        except FacerepError as exc:
            raise type(exc)(f"{where} ({method.config}): {exc}") from None
        key = _key({"config": unstructure(cfg), "plugins": versions})
        cfg_path = configs / f"pretrain_{_slug(method.name)}-{key}.yaml"
        cfg_path.write_text(yaml.safe_dump(data, sort_keys=False))
        pre_dir = bench_dir / "pretrain" / f"{_slug(method.name)}-{key}"
        stages.append(_Stage("pretrain", method.name, pre_dir, cfg_path, steps=steps))
        eval_data = {"name": f"{suite.name}/{method.name}", "seed": suite.seed, "evaluate": evaluate}
        stage = _eval_stage(method.name, eval_data, {"weights_of": key}, bench_dir, plugins, pre_dir / "backbone.safetensors")
        stage.random_row = _key(data["backbone"])  # replaced by the row's label below
        stages.append(stage)
        backbones.setdefault(_key(data["backbone"]), data["backbone"])
    baseline_rows: list[tuple[str, dict[str, Any]]] = []
    labels: dict[str, str] = {}
    if suite.baselines.random_init:
        for bkey, backbone in backbones.items():
            label = "random init" if len(backbones) == 1 else f"random init ({_backbone_label(backbone)}, {bkey[:4]})"
            labels[bkey] = label
            baseline_rows.append((label, backbone))
    for stage in stages:
        if stage.kind == "eval":
            stage.random_row = labels.get(stage.random_row or "")
    for px in suite.baselines.pixels:
        label = f"raw pixels {px.size}x{px.size} {'grey' if px.grey else 'rgb'}"
        baseline_rows.append((label, {"name": "core.pixels", "params": {"size": px.size, "grey": px.grey}}))
    for label, backbone in baseline_rows:
        entries = _whole_map_readout(evaluate) if backbone["name"] == "core.pixels" else evaluate
        eval_data = {"name": f"{suite.name}/{label}", "seed": suite.seed, "backbone": backbone, "evaluate": entries}
        stages.append(_eval_stage(label, eval_data, {"backbone": backbone}, bench_dir, plugins, None))
    return stages


def _whole_map_readout(evaluate: list[Any]) -> list[Any]:
    """The evaluation of a raw-pixel row: its linear probes read the whole pixel map (``pooled``,
    i.e. all ``size x size`` values). A layout-keeping readout chosen for the networks (``grid2``)
    would pool the image itself down to 2 x 2 pixels: the pixel map already keeps the layout."""
    out = copy.deepcopy(evaluate)
    for entry in out:
        if not isinstance(entry, dict):
            continue
        for field in ("protocol", "protocols"):
            items = entry.get(field)
            for proto in items if isinstance(items, list) else [items]:
                if isinstance(proto, dict) and proto.get("name") == "core.linear_probe" and isinstance(proto.get("params"), dict):
                    proto["params"]["readout"] = "pooled"
    return out


def _backbone_label(backbone: dict[str, Any]) -> str:
    params = backbone.get("params", {}) or {}
    return str(params.get("model") or backbone.get("name"))


def _eval_stage(row: str, eval_data: dict[str, Any], what: dict[str, Any], bench_dir: Path, plugins: PluginSet,
                weights: Path | None) -> _Stage:
    versions = _plugin_versions(plugins)
    try:  # the evaluation's components (and a baseline's backbone) checked before anything runs
        resolve_run(structure(eval_data, RunConfig, source=f"evaluation of {row}"), plugins)
    except FacerepError as exc:
        raise type(exc)(f"evaluation of {row}: {exc}") from None
    key = _key({"evaluate": eval_data["evaluate"], "seed": eval_data["seed"], **what, "plugins": versions})
    cfg_path = bench_dir / "configs" / f"eval_{_slug(row)}-{key}.yaml"
    cfg_path.write_text(yaml.safe_dump(eval_data, sort_keys=False))
    return _Stage("eval", row, bench_dir / "eval" / f"{_slug(row)}-{key}", cfg_path, weights=weights)


def _done(stage: _Stage) -> bool:
    if stage.kind == "pretrain":
        return (stage.work_dir / "backbone.safetensors").is_file() and (stage.work_dir / "backbone.json").is_file()
    return (stage.work_dir / "results.json").is_file()


def _run_stage(stage: _Stage, plugins: PluginSet) -> None:
    from facerep.run import run
    from facerep.workdir import checkpoints

    if stage.kind == "pretrain":
        has_ckpt = bool(checkpoints(stage.work_dir)) and (stage.work_dir / "last_checkpoint").is_file()
        if has_ckpt:
            print(f"[bench] {stage.row}: resuming pretraining from {stage.work_dir}", flush=True)
        run(stage.config, work_dir=stage.work_dir, plugins=plugins, resume=has_ckpt, overwrite=not has_ckpt)
    else:
        assert stage.weights is None or stage.weights.is_file(), stage.weights
        run(stage.config, work_dir=stage.work_dir, plugins=plugins, evaluate_only=True,
            weights=str(stage.weights) if stage.weights is not None else None, overwrite=True)


def run_bench(path: str | Path, *, overrides: tuple[str, ...] | list[str] = (), work_dir: str | Path | None = None,
              dry_run: bool = False, plugins: PluginSet | None = None) -> dict[str, Any]:
    """Run (or continue) a suite; returns the leaderboard data."""
    from facerep.eval.leaderboard import write_leaderboard
    from facerep.workdir import lock_work_dir, make_work_dir, release_work_dir

    plugins = plugins or get_plugins()
    suite = load_suite(path, overrides)
    bench_dir = Path(work_dir or suite.work_dir or Path("work_dirs") / "bench" / suite.name)
    make_work_dir(bench_dir)
    lock_work_dir(bench_dir)
    try:
        state = _State(bench_dir / "bench_state.json")
        stages = plan(suite, bench_dir, plugins, state, calibrate=not dry_run, base=Path(path).parent)
        _print_plan(stages)
        if dry_run:
            return {"stages": stages}
        start = time.perf_counter()
        todo = [s for s in stages if not _done(s)]
        spent: list[float] = []
        for n, stage in enumerate(todo, start=1):
            left = f", about {_minutes(sum(spent) / len(spent) * (len(todo) - n + 1))} left" if spent else ""
            print(f"[bench {n}/{len(todo)}] {stage.kind} {stage.row}{left}", flush=True)
            t0 = time.perf_counter()
            _run_stage(stage, plugins)
            spent.append(time.perf_counter() - t0)
        rows = []
        for stage in stages:
            if stage.kind != "eval":
                continue
            records = json.loads((stage.work_dir / "results.json").read_text()).get("results", [])
            kind = "method" if stage.weights is not None else ("pixels" if stage.row.startswith("raw pixels") else "random")
            rows.append({"row": stage.row, "kind": kind, "records": records, "work_dir": str(stage.work_dir),
                         "random_row": stage.random_row})
        steps = {s.row: s.steps for s in stages if s.kind == "pretrain"}
        budget = {k: v for k, v in unstructure(suite.budget).items() if v is not None}
        board = write_leaderboard(bench_dir, suite.name, rows, budget=budget, steps=steps,
                                  seconds=round(time.perf_counter() - start, 1))
        print("\n" + (bench_dir / "leaderboard.md").read_text())
        return board
    finally:
        release_work_dir(bench_dir)


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 90 else f"{seconds:.0f} s"


def _print_plan(stages: list[_Stage]) -> None:
    from facerep.describe import text_table

    rows = [(s.kind, s.row, str(s.steps) if s.steps is not None else "", "done" if _done(s) else "to do", str(s.work_dir)) for s in stages]
    print(text_table(rows, ("stage", "row", "steps", "status", "work dir")), flush=True)

