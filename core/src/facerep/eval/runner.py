"""The evaluation grid: every ``evaluate`` entry x protocol x few-shot fraction x seed.

Writes, under the work dir: ``subsets/*.json`` (the exact training indices of every run),
``samples/*.png`` (predictions drawn on test images, for tasks that can draw), and hands the
records to :mod:`facerep.eval.report` for ``results.json``, ``results.md`` and the plots.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import attrs
import cv2
import numpy as np

from facerep.build import build, resolve_eval
from facerep.config import ComponentConfig, EvalConfig, RunConfig, unstructure
from facerep.data.subset import Subset
from facerep.errors import ConfigError
from facerep.eval.fewshot import fraction_subset, identity_subset
from facerep.eval.outcomes import save_outcomes
from facerep.eval.protocols import FeatureStore, feature_cache
from facerep.eval.report import append_record
from facerep.plugins import PluginSet

__all__ = ["backbone_component", "evaluate_entries", "few_shot_indices", "protocol_labels", "set_backbone_layers"]


def set_backbone_layers(backbone: Any, layers: tuple[int, ...] | None) -> None:
    """Make the backbone return these intermediate layers (heads over a feature pyramid)."""
    if layers is None or tuple(getattr(getattr(backbone, "params", None), "layers", ())) == tuple(layers):
        return
    params = getattr(backbone, "params", None)
    if params is None or not attrs.has(type(params)) or "layers" not in attrs.fields_dict(type(params)):
        raise ConfigError(f"backbone_layers: the backbone {type(backbone).__name__} has no configurable 'layers'")
    backbone.params = attrs.evolve(params, layers=tuple(layers))


def few_shot_indices(task: Any, train: Any, fraction: float, seed: int, shots: int | None) -> np.ndarray:
    """Seeded, nested subset. With ``shots``: K images per identity of a ``fraction`` of the
    identities (needs ``task.groups``). Otherwise: a fraction stratified by ``task.strata`` when
    the task gives classes; else, for tasks that give identity groups (recognition), a fraction of
    the identities with all their images (LAFS's identity fraction); else a plain random fraction."""
    groups = task.groups(train) if hasattr(task, "groups") else None
    if shots is not None:
        if groups is None:
            raise ConfigError(f"shots: task {task.name} gives no identity groups for dataset {train.info.name}")
        return identity_subset(groups, fraction, shots, seed)
    if fraction >= 1.0:
        return np.arange(len(train))
    strata = task.strata(train) if hasattr(task, "strata") else None
    if strata is None and groups is not None:
        return identity_subset(groups, fraction, None, seed)
    return fraction_subset(len(train), fraction, seed, strata)


def _build_task(ev: EvalConfig, comps: dict[str, Any], train: Any, protocols: list[Any]) -> Any:
    if "task" in comps:
        return build(comps["task"])
    from facerep.eval.label_task import LabelTask

    size = next((getattr(p.params, "image_size", None) for p in protocols if getattr(p, "params", None) is not None), None)
    return LabelTask(ev.label, train, size)


def _check_input_size(backbone: Any, task: Any, where: str) -> None:
    size = getattr(getattr(backbone, "params", None), "img_size", None)
    if getattr(backbone, "is_vit", False) and size and task.input_size and task.input_size != size:
        raise ConfigError(f"{where}: task input_size {task.input_size} differs from the ViT backbone's img_size {size} "
                          f"(set the task's input_size to {size}, or build the backbone for {task.input_size})")


def _with_seed(protocol: Any, seed: int) -> Any:
    params = getattr(protocol, "params", None)
    if params is not None and attrs.has(type(params)) and "seed" in attrs.fields_dict(type(params)):
        return type(protocol)(attrs.evolve(params, seed=seed))
    return protocol


def _draw_samples(task: Any, test: Any, predictions: list[Any], path: Path, n: int = 6) -> str | None:
    draw = getattr(task, "draw", None)
    if draw is None or not predictions:
        return None
    tiles = []
    for i in range(min(n, len(test))):
        img = draw(test[i], predictions[i])
        if img is None:
            return None
        tiles.append(cv2.resize(img, (round(img.shape[1] * 192 / img.shape[0]), 192), interpolation=cv2.INTER_AREA))
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(np.hstack(tiles), cv2.COLOR_RGB2BGR))
    return str(path)


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)


def evaluate_entries(cfg: RunConfig, backbone: Any, plugins: PluginSet, out_dir: Path, weights: str) -> list[dict[str, Any]]:
    """Run the whole grid for one backbone; returns one record per (entry, protocol, fraction, seed)."""
    records: list[dict[str, Any]] = []
    own_layers = tuple(getattr(getattr(backbone, "params", None), "layers", ()) or ())
    store = FeatureStore()  # the backbone sees each image once per run of entries that read it, whatever the grid
    for i, ev in enumerate(cfg.evaluate):
        where = f"evaluate.{i}"
        comps = resolve_eval(ev, where, plugins)
        train, test = build(comps["train"]), build(comps["test"])
        val = build(comps["val"]) if "val" in comps else None
        proto_keys = sorted((k for k in comps if k.startswith("protocol.")), key=lambda k: int(k.split(".")[1]))
        protocols = [build(comps[k]) for k in proto_keys]
        proto_names = protocol_labels([comps[k] for k in proto_keys])
        task = _build_task(ev, comps, train, protocols)
        set_backbone_layers(backbone, ev.backbone_layers if ev.backbone_layers is not None else own_layers)  # per entry
        _check_input_size(backbone, task, where)
        name = ev.name or f"{train.info.name}/{task.name}"
        saving = None
        if ev.save_models:
            if "task" not in comps or not hasattr(task, "head_spec"):
                raise ConfigError(f"{where}.save_models: task {task.name} cannot be saved (it does not implement head_spec)")
            saving = _Saving(comps["task"], _backbone_component(cfg, backbone), task.head_spec(train))
        prep = _preparation(ev, comps, task, backbone)
        named = [(ds, _component_key(comps[k])) for k, ds in (("train", train), ("test", test), ("val", val)) if ds is not None]
        store.retain({(prep, n) for _, n in named})  # what the previous entry read and this one does not: dropped
        with feature_cache(store, prep=prep, datasets=named):
            records += _run_entry(ev, name, task, train, test, val, protocols, proto_names, backbone, out_dir, weights, saving)
    return records


def _component_key(resolved: Any) -> tuple:
    """A component by what it is (name + params): equal for the same dataset (or task) rebuilt by another entry."""
    return (resolved.spec.name, json.dumps(unstructure(resolved.params), sort_keys=True, default=str))


def _preparation(ev: EvalConfig, comps: dict[str, Any], task: Any, backbone: Any) -> tuple:
    """What the cached rows of an entry depend on besides the images and the protocol's own key: the
    task's preparation (its component, or the label and size of a label entry) and the layers the
    backbone returns (``backbone_layers`` changes per entry; head inputs can read them)."""
    layers = tuple(getattr(getattr(backbone, "params", None), "layers", ()) or ())
    if "task" in comps:
        return ("task", *_component_key(comps["task"]), layers)
    return ("label", ev.label, task.input_size, layers)


@attrs.frozen
class _Saving:
    task: Any  # the resolved task component
    backbone: ComponentConfig
    spec: dict[str, Any]

    def save(self, directory: Path, out: Any, record: dict[str, Any], *, linear: bool) -> str | None:
        from facerep.eval.saved import save_trained

        if getattr(out, "head", None) is None:  # e.g. the closed-form probe, k-NN: no trained head
            return None
        task_cfg = ComponentConfig(self.task.spec.name, unstructure(self.task.params) if self.task.params is not None else {})
        keep = ("name", "protocol", "weights", "fraction", "seed", "n_train", "train", "metrics")
        path = save_trained(directory, out.backbone, out.head, backbone_cfg=self.backbone, task_cfg=task_cfg, spec=self.spec,
                            linear=linear,
                            meta={"run": {k: record[k] for k in keep}})
        return str(path)


def backbone_component(cfg: RunConfig) -> ComponentConfig | None:
    """The backbone component (name + params) of a run: the config's, or the weights' sidecar's.

    Here and not in :mod:`facerep.build`: it reads the sidecar through :mod:`facerep.checkpoint`,
    which itself builds through :mod:`facerep.build`."""
    if cfg.backbone_weights is not None:
        from facerep.checkpoint import read_sidecar
        from facerep.config import structure
        from facerep.data.folder import expand_path

        return structure(read_sidecar(expand_path(cfg.backbone_weights))["backbone"], ComponentConfig, path="backbone")
    return cfg.backbone


def _backbone_component(cfg: RunConfig, backbone: Any) -> ComponentConfig:
    """The backbone's component as built now (its params include the entry's layers)."""
    comp = backbone_component(cfg)
    params = getattr(backbone, "params", None)
    if params is not None and attrs.has(type(params)):
        return ComponentConfig(comp.name, unstructure(params))
    return comp


def protocol_labels(resolved: list[Any]) -> list[str]:
    """Each protocol's name; where an entry lists one protocol several times (e.g. the linear
    probe with two readouts), the parameters that differ between them are added,
    ``core.linear_probe[readout=grid2]``, so that reports and leaderboards keep them apart."""
    labels = []
    for r in resolved:
        same = [o for o in resolved if o.spec.name == r.spec.name]
        if len(same) == 1:
            labels.append(r.spec.name)
            continue
        fields = [attrs.asdict(o.params, recurse=False) if attrs.has(type(o.params)) else {} for o in same]
        mine = fields[same.index(r)]
        differ = [k for k in mine if len({repr(f.get(k)) for f in fields}) > 1]
        labels.append(f"{r.spec.name}[{', '.join(f'{k}={mine[k]}' for k in differ)}]")
    return labels


def _store_outcomes(task: Any, out: Any, test: Any, record: dict[str, Any], path: Path) -> Path | None:
    """The record's per-item outcomes (``Task.outcomes``, API 1.5) in ``path``, when the task gives
    them and they reproduce the record's primary metric; None otherwise (intervals then count the
    seeds only)."""
    outcomes_of, predictions = getattr(task, "outcomes", None), getattr(out, "predictions", None)
    if outcomes_of is None or predictions is None or not len(predictions):
        return None
    items = outcomes_of(predictions, test)
    want, got = record["metrics"].get(record["primary"], float("nan")), items.metric()
    if not abs(got - want) <= 1e-6 * max(1.0, abs(want)):
        print(f"[eval] warning: {task.name}.outcomes() gives {record['primary']} {got:.6g} where evaluate() gave {want:.6g}; "
              f"outcomes not stored for {path.stem}", flush=True)
        return None
    save_outcomes(path, items, test=record["test"], metric=record["primary"])
    return path


def _run_entry(ev: EvalConfig, name: str, task: Any, train: Any, test: Any, val: Any, protocols: list[Any], proto_names: list[str],
               backbone: Any, out_dir: Path, weights: str, saving: _Saving | None = None) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    for fraction in ev.fractions:
        for seed in ev.seeds:
            idx = few_shot_indices(task, train, fraction, seed, ev.shots)
            subset_file = out_dir / "subsets" / f"{_slug(name)}_f{fraction:g}_k{ev.shots or 'all'}_s{seed}.json"
            subset_file.parent.mkdir(parents=True, exist_ok=True)
            subset_file.write_text(json.dumps({
                "dataset": train.info.name, "split": train.info.split, "n_total": len(train), "fraction": fraction,
                "shots": ev.shots, "seed": seed, "n": len(idx), "indices": idx.tolist()}))
            subset = Subset(train, idx, split=f"{train.info.split}[{fraction:g}]")
            for proto, proto_name in zip(protocols, proto_names, strict=True):
                start = time.perf_counter()
                out = _with_seed(proto, seed).run(backbone, task, subset, test, val)
                seconds = round(time.perf_counter() - start, 1)
                run = _Run(ev, name, task, train, test, len(idx), str(subset_file.relative_to(out_dir)), fraction, seed, weights, out_dir)
                record = run.record(out, proto_name, seconds)
                ref = getattr(out, "reference", None)
                if ref is not None:
                    record["versus"] = f"{proto_name}:{out.reference_name}"  # the report pairs this row with that one
                if saving is not None:
                    where = out_dir / "models" / f"{_slug(name)}_{_slug(proto_name)}_{_slug(weights)}_f{fraction:g}_s{seed}"
                    saved = saving.save(where, out, record, linear=bool(getattr(proto, "linear", False)))
                    if saved:
                        record["model"] = str(Path(saved).relative_to(out_dir))
                if seed == ev.seeds[0] and fraction == max(ev.fractions):
                    pic = out_dir / "samples" / f"{_slug(name)}_{_slug(proto_name)}_{_slug(weights)}.png"
                    drawn = _draw_samples(task, test, getattr(out, "predictions", []), pic)
                    if drawn:
                        record["samples"] = str(Path(drawn).relative_to(out_dir))
                records.append(run.keep(record))
                if ref is not None:  # trained inside the protocol's run: its time is in the record above
                    records.append(run.keep(run.record(ref, record["versus"], 0.0)))
    return records


@attrs.frozen
class _Run:
    """What every record of one (entry, fraction, seed) shares."""

    ev: EvalConfig
    name: str
    task: Any
    train: Any
    test: Any
    n_train: int
    subset: str
    fraction: float
    seed: int
    weights: str
    out_dir: Path

    def record(self, out: Any, protocol: str, seconds: float) -> dict[str, Any]:
        """One protocol output's record, with its per-item outcomes stored beside it where the task gives them."""
        task, shots = self.task, self.ev.shots
        metrics = getattr(out, "metrics", out)
        record = {
            "name": self.name, "task": task.name, "label": task.label, "protocol": protocol, "weights": self.weights,
            "fraction": self.fraction, "shots": shots, "seed": self.seed, "n_train": self.n_train,
            "train": f"{self.train.info.name}:{self.train.info.split} ({self.n_train}/{len(self.train)})",
            "test": f"{self.test.info.name}:{self.test.info.split} ({len(self.test)})",
            "primary": task.primary_metric, "higher_is_better": bool(task.higher_is_better),
            "metrics": {k: float(v) for k, v in metrics.items()}, "seconds": seconds, "subset": self.subset,
        }
        stem = f"{_slug(self.name)}_{_slug(protocol)}_{_slug(self.weights)}_f{self.fraction:g}_k{shots or 'all'}_s{self.seed}"
        stored = _store_outcomes(task, out, self.test, record, self.out_dir / "outcomes" / f"{stem}.npz")
        if stored:
            record["outcomes"] = str(stored.relative_to(self.out_dir))
        return record

    def keep(self, record: dict[str, Any]) -> dict[str, Any]:
        """``record`` appended to results.jsonl and printed."""
        append_record(self.out_dir, record)  # on disk before it is printed: a killed grid keeps every run it showed
        print(f"[eval] {self.name} | {record['protocol']} | {self.weights} | fraction {self.fraction:g} seed {self.seed} | "
              f"{record['primary']} {record['metrics'].get(record['primary'], float('nan')):.4f} | {record['seconds']}s", flush=True)
        return record
