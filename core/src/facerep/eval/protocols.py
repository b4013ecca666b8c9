"""Transfer protocols: frozen backbone + task head, and full fine-tuning (the linear probe is in
``linear_probe.py``). Both drive a :class:`~facerep.protocols.Task`; see its docstring for the calls.

* ``frozen_head`` (FaRL ``freeze_backbone``, FRL "linear adaptation"): the backbone runs once per
  image; ``head.select`` outputs are cached and the head trains on them (no augmentation: the
  cached views are the test-mode views).
* ``finetune`` (FaRL ``refine_backbone``): everything trains on augmented views, the backbone at
  ``backbone_lr`` with layer-wise lr decay (timm's ``param_groups_layer_decay``), the head at ``lr``.

Both report the last epoch's test metrics; with a ``val`` split they also report ``val_*`` and the
test metrics of the epoch that scored best on ``val`` (``best_*``). Test is never used for a choice.
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from collections.abc import Callable, Collection, Hashable, Iterable, Iterator
from contextvars import ContextVar
from typing import Any, Literal

import attrs
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from facerep.data.subset import Subset
from facerep.protocols import Backbone, FaceDataset, Task
from facerep.types import Prepared

__all__ = [
    "EvalOutput", "FeatureStore", "FineTune", "FineTuneParams", "FrozenHead", "FrozenHeadParams", "PreparedData", "collate_prepared",
    "feature_cache",
]


@attrs.define
class EvalOutput:
    """``metrics`` (flat floats), test ``predictions`` in dataset order, per-epoch ``history``; the
    trained ``backbone`` and ``head`` when the protocol trains a head (saved with ``save_models``).

    ``reference``: a second output the protocol's claim is measured against, on the same subset and
    test items (``core.self_distill``'s teacher, which is plain fine-tuning); the eval runner stores it
    as its own record, protocol ``<protocol>:<reference_name>``, with its own per-item outcomes, and
    the report pairs the two (``facerep.eval.report.reference_gap_rows``)."""

    metrics: dict[str, float]
    predictions: list[Any] = attrs.field(factory=list)
    history: list[dict[str, float]] = attrs.field(factory=list)
    backbone: Any = None
    head: Any = None
    reference: EvalOutput | None = None
    reference_name: str = "reference"


class PreparedData(Dataset):
    """``task.prepare`` over a dataset; augmentation randomness is seeded by (seed, epoch, index)."""

    def __init__(self, task: Task, dataset: FaceDataset, *, train: bool, seed: int = 0) -> None:
        self.task, self.dataset, self.train, self.seed, self.epoch = task, dataset, train, seed, 0

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> Prepared:
        rng = np.random.default_rng([self.seed, self.epoch, i])
        return self.task.prepare(self.dataset[i], train=self.train, rng=rng)


def collate_prepared(items: list[Prepared]) -> tuple[torch.Tensor, dict[str, torch.Tensor], list[dict]]:
    images = torch.from_numpy(np.ascontiguousarray(np.stack([p.image for p in items]).transpose(0, 3, 1, 2)))
    keys = items[0].target.keys()
    targets = {k: torch.as_tensor(np.stack([np.asarray(p.target[k]) for p in items])) for k in keys}
    return images, targets, [p.meta for p in items]


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _autocast(device: torch.device, precision: str) -> torch.autocast:
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def _cat(outputs: list[Any]) -> Any:
    if isinstance(outputs[0], dict):
        return {k: torch.cat([o[k] for o in outputs]) for k in outputs[0]}
    return torch.cat(outputs)


def _slice(tree: Any, idx: Any) -> Any:
    return {k: v[idx] for k, v in tree.items()} if isinstance(tree, dict) else tree[idx]


def _to_cpu_float(out: Any) -> Any:
    if isinstance(out, dict):
        return {k: v.detach().float().cpu() for k, v in out.items()}
    return out.detach().float().cpu()


def _loader(data: Dataset, batch_size: int, num_workers: int, *, shuffle: bool = False, seed: int = 0) -> DataLoader:
    gen = torch.Generator().manual_seed(seed)
    drop_last = shuffle and len(data) % batch_size == 1 and len(data) > 1  # as fit_head: no lone BatchNorm sample
    return DataLoader(data, batch_size=batch_size, shuffle=shuffle, num_workers=num_workers, collate_fn=collate_prepared, generator=gen,
                      drop_last=drop_last)


@attrs.define(eq=False)
class _Rows:
    """Rows of one (preparation, base dataset, key): ``have[i]`` when base sample ``i``'s row is held."""

    have: np.ndarray
    rows: list


@attrs.define(eq=False)
class FeatureStore:
    """Frozen-backbone rows that can outlive one :func:`feature_cache` block. The evaluation runner
    keeps one for its whole grid and, before each entry, :meth:`retain`\\ s only the (preparation,
    dataset) pairs that entry reads: entries of one family (adjacent in a config) share one backbone
    pass, and memory never holds more than one entry's images' rows."""

    groups: dict[tuple, _Rows] = attrs.field(factory=dict)  # (prep, base, key) -> rows
    pinned: dict[tuple, Any] = attrs.field(factory=dict)  # ("id", n) -> the unnamed dataset n: alive, so n is not reused while cached

    def retain(self, reads: Collection[tuple[Hashable, Hashable]]) -> None:
        """Drop the rows of every (preparation, dataset name) pair not in ``reads`` (and of every
        dataset the blocks did not name)."""
        keep = {(prep, ("named", name)) for prep, name in reads}
        self.groups = {k: v for k, v in self.groups.items() if (k[0], k[1]) in keep}
        kept = {k[1] for k in self.groups}
        self.pinned = {k: v for k, v in self.pinned.items() if k in kept}

    def __len__(self) -> int:
        return sum(int(g.have.sum()) for g in self.groups.values())


@attrs.frozen
class _Scope:
    store: FeatureStore
    prep: Hashable
    names: dict[int, Hashable]  # id of a named dataset -> its name
    held: tuple  # the named datasets: their ids stay theirs while the block runs

    def base_key(self, base: Any) -> tuple:
        name = self.names.get(id(base))
        if name is not None:
            return ("named", name)
        key = ("id", id(base))
        self.store.pinned[key] = base
        return key


_CACHE: ContextVar[_Scope | None] = ContextVar("facerep_feature_cache", default=None)


@contextlib.contextmanager
def feature_cache(store: FeatureStore | None = None, *, prep: Hashable | None = None,
                  datasets: Iterable[tuple[Any, Hashable]] = ()) -> Iterator[FeatureStore]:
    """Within this block, frozen-backbone outputs are computed once per (backbone, head input
    kind, image, view) and reused: across protocols, few-shot fractions and seeds the test split
    and the training pool go through the backbone once.

    Rows go to ``store`` (a new one by default) and are shared with other blocks over the same
    store only under an equal ``prep``: the task's preparation of the images (the same dataset
    prepared by another task gives other rows). Without one, the block's rows are its own.
    ``datasets`` names (dataset, name) pairs by what they are (e.g. their component), so that a
    dataset rebuilt by a later block finds its rows; other base datasets are keyed by identity
    and kept alive while their rows are held (an ``id`` is reused once its object is freed)."""
    store = FeatureStore() if store is None else store
    pairs = tuple(datasets)
    scope = _Scope(store, object() if prep is None else prep, {id(d): n for d, n in pairs}, tuple(d for d, _ in pairs))
    token = _CACHE.set(scope)
    try:
        yield store
    finally:
        _CACHE.reset(token)


@contextlib.contextmanager
def no_feature_cache() -> Iterator[None]:
    """Within this block frozen-backbone outputs are not cached (datasets that are not views of a
    stable dataset, e.g. pseudo-labelled ones, rebuilt on every run)."""
    token = _CACHE.set(None)
    try:
        yield
    finally:
        _CACHE.reset(token)


def _base_indices(dataset: Any) -> tuple[Any, np.ndarray]:
    """The dataset under any :class:`Subset` views and each sample's index in it."""
    idx = None
    while isinstance(dataset, Subset):
        idx = dataset.indices if idx is None else dataset.indices[idx]
        dataset = dataset.dataset
    return dataset, np.arange(len(dataset)) if idx is None else idx


def cached_rows(dataset: FaceDataset, key: tuple, compute: Callable[[FaceDataset], tuple[list, list]]) -> tuple[list, list]:
    """Per-sample rows of ``compute`` (which returns (rows, metas) for a dataset) for every sample,
    computing only those not yet in the active :func:`feature_cache` under ``key``."""
    scope = _CACHE.get()
    if scope is None:
        return compute(dataset)
    base, idx = _base_indices(dataset)
    group = (scope.prep, scope.base_key(base), key)
    held = scope.store.groups.get(group)
    if held is None:
        held = scope.store.groups[group] = _Rows(np.zeros(len(base), bool), [None] * len(base))
    # each missing base sample once (a view can repeat one), computed in the view's order
    missing = np.flatnonzero(~held.have[idx])
    need, first = np.unique(idx[missing], return_index=True)
    if len(need):
        order = np.argsort(first)
        need, pos = need[order], missing[first[order]]
        rows, metas = compute(Subset(dataset, pos) if len(pos) < len(dataset) else dataset)
        for i, row, meta in zip(need.tolist(), rows, metas, strict=True):
            held.rows[i] = (row, meta)
        held.have[need] = True
    got = [held.rows[i] for i in idx.tolist()]
    return [g[0] for g in got], [g[1] for g in got]


def _select_key(head: Any) -> tuple:
    return (type(head).__module__, type(head).__qualname__, repr(getattr(head, "select_key", None)))


@torch.no_grad()
def cache_selected(backbone: Backbone, head: Any, task: Task, dataset: FaceDataset, *, views: bool, batch_size: int = 64,
                   num_workers: int = 0, precision: str = "fp32") -> tuple[list[dict[str, torch.Tensor]], dict[str, torch.Tensor], list]:
    """Frozen backbone: ``head.select`` of every prepared (test-mode) image, per test view when
    ``views``; returns (per-view cached inputs, targets, metas), all on the CPU."""
    backbone.eval()
    device = next(backbone.parameters()).device

    def compute(data: FaceDataset) -> tuple[list, list]:
        rows: list = []
        metas: list[dict] = []
        for images, target, meta in _loader(PreparedData(task, data, train=False), batch_size, num_workers):
            xs = task.test_views(images) if views else [images]
            sel = []
            for x in xs:
                with _autocast(device, precision):
                    out = head.select(backbone(backbone.preprocess(x.to(device))))
                sel.append({k: t.detach().float().cpu() for k, t in out.items()})
            for j in range(len(images)):
                rows.append(([{k: v[j] for k, v in s.items()} for s in sel], {k: v[j] for k, v in target.items()}))
            metas.extend(meta)
        return rows, metas

    if len(dataset) == 0:
        raise ValueError(f"dataset {dataset.info.name} is empty")
    rows, metas = cached_rows(dataset, ("select", id(backbone), _select_key(head), views, precision), compute)
    n_views = len(rows[0][0])
    per_view = [{k: torch.stack([r[0][v][k] for r in rows]) for k in rows[0][0][v]} for v in range(n_views)]
    targets = {k: torch.stack([r[1][k] for r in rows]) for k in rows[0][1]}
    return per_view, targets, metas


@torch.no_grad()
def _predict_cached(head: Any, task: Task, inputs: list[dict[str, torch.Tensor]], metas: list[dict], batch_size: int,
                    device: torch.device, precision: str) -> list[Any]:
    head.eval()
    preds: list[Any] = []
    for start in range(0, len(metas), batch_size):
        sl = slice(start, start + batch_size)
        outs = []
        for view in inputs:
            with _autocast(device, precision):
                outs.append(_to_cpu_float(head({k: v[sl].to(device) for k, v in view.items()})))
        preds.extend(task.predict(outs, metas[sl]))
    return preds


@torch.no_grad()
def head_outputs(backbone: Backbone, head: Any, task: Task, dataset: FaceDataset, *, batch_size: int = 64, num_workers: int = 0,
                 precision: str = "fp32") -> Iterator[tuple[list[Any], list[dict]]]:
    """Per batch of test-mode prepared samples: the head's outputs for each of the task's test
    views (on the CPU, float) and the samples' metas."""
    backbone.eval()
    head.eval()
    device = next(backbone.parameters()).device
    for images, _, metas in _loader(PreparedData(task, dataset, train=False), batch_size, num_workers):
        outs = []
        for x in task.test_views(images):
            with _autocast(device, precision):
                outs.append(_to_cpu_float(head(head.select(backbone(backbone.preprocess(x.to(device)))))))
        yield outs, metas


def predict_dataset(backbone: Backbone, head: Any, task: Task, dataset: FaceDataset, *, batch_size: int = 64,
                    num_workers: int = 0, precision: str = "fp32") -> list[Any]:
    """Backbone + head over test views of every sample -> ``task.predict`` (original coordinates)."""
    preds: list[Any] = []
    for outs, metas in head_outputs(backbone, head, task, dataset, batch_size=batch_size, num_workers=num_workers, precision=precision):
        preds.extend(task.predict(outs, metas))
    return preds


def _schedule(optimizer: torch.optim.Optimizer, total: int, warmup: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up then cosine to zero, per step."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _prefixed(prefix: str, metrics: dict[str, float]) -> dict[str, float]:
    return {f"{prefix}{k}": v for k, v in metrics.items()}


def _better(task: Task, a: float, b: float | None) -> bool:
    return b is None or (a > b if task.higher_is_better else a < b)


@attrs.frozen
class FrozenHeadParams:
    """Attributes:
    epochs: passes over the (few-shot) training subset; ``min_steps`` raises it for tiny subsets.
    lr, weight_decay: AdamW (FaRL heads: lr 1e-3, wd 1e-5).
    val_every: evaluate ``val`` every this many epochs (when given).
    """

    epochs: int = 50
    min_steps: int = 200
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_epochs: int = 1
    val_every: int = 5
    num_workers: int = 0
    precision: Literal["fp32", "bf16"] = "fp32"
    device: str = "auto"
    seed: int = 0


class FrozenHead:
    """Frozen backbone + the task's head, trained on cached ``head.select`` outputs."""

    name = "frozen_head"
    linear = False

    def __init__(self, params: FrozenHeadParams | None = None) -> None:
        self.params = params or FrozenHeadParams()

    def run(self, backbone: Backbone, task: Task, train: FaceDataset, test: FaceDataset, val: FaceDataset | None = None) -> EvalOutput:
        p = self.params
        device = resolve_device(p.device)
        backbone.to(device).eval()
        torch.manual_seed(p.seed)
        head = task.build_head(backbone, train, linear=self.linear).to(device)
        kw = dict(batch_size=p.batch_size, num_workers=p.num_workers, precision=p.precision)
        train_in, train_t, _ = cache_selected(backbone, head, task, train, views=False, **kw)
        test_in, _, test_meta = cache_selected(backbone, head, task, test, views=True, **kw)
        val_in, val_meta = cache_selected(backbone, head, task, val, views=True, **kw)[::2] if val is not None else (None, None)
        n = len(train_t[next(iter(train_t))])
        evaluate_val = None
        if val is not None:
            def evaluate_val() -> dict[str, float]:
                return task.evaluate(_predict_cached(head, task, val_in, val_meta, p.batch_size, device, p.precision), val)
        def batch(idx: torch.Tensor) -> tuple[dict, dict]:
            return {k: v[idx].to(device) for k, v in train_in[0].items()}, {k: v[idx].to(device) for k, v in train_t.items()}

        history = fit_head(head, batch, n, p, task, evaluate_val, device)
        preds = _predict_cached(head, task, test_in, test_meta, p.batch_size, device, p.precision)
        metrics = task.evaluate(preds, test)
        history.add_best(metrics, head, lambda: task.evaluate(_predict_cached(head, task, test_in, test_meta, p.batch_size, device,
                                                                                 p.precision), test))
        return EvalOutput(metrics, preds, history.rows, backbone=backbone, head=head)


class LinearHeadProtocol(FrozenHead):
    """The frozen protocol with the task's linear head (``build_head(..., linear=True)``)."""

    name = "linear"
    linear = True


@attrs.define
class _History:
    rows: list[dict[str, float]] = attrs.field(factory=list)
    best_val: dict[str, float] = attrs.field(factory=dict)
    best_state: dict[str, torch.Tensor] | None = None
    best_epoch: int = -1

    def add_best(self, metrics: dict[str, float], model: torch.nn.Module, score_test: Callable[[], dict[str, float]]) -> None:
        """With a validation split: load the epoch best on it and add ``val_*``, ``best_*`` (test
        metrics of that epoch) and ``best_epoch`` to ``metrics``."""
        if self.best_state is None:
            return
        model.load_state_dict(self.best_state)
        metrics.update(_prefixed("val_", self.best_val), **_prefixed("best_", score_test()), best_epoch=float(self.best_epoch))


def fit_head(model: torch.nn.Module, batch_fn: Callable[[torch.Tensor], tuple[dict, dict]], n: int, p: Any, task: Task,
             evaluate_val: Callable[[], dict[str, float]] | None, device: torch.device, params: list | None = None) -> _History:
    """AdamW + warm-up/cosine over ``epochs`` (at least ``min_steps`` steps) on cached inputs.
    ``model`` must provide ``forward(inputs)`` and ``loss(output, targets)``."""
    steps_per_epoch = max(1, math.ceil(n / p.batch_size))
    epochs = max(p.epochs, math.ceil(p.min_steps / steps_per_epoch))
    opt = torch.optim.AdamW(params or model.parameters(), lr=p.lr, weight_decay=p.weight_decay)
    sched = _schedule(opt, epochs * steps_per_epoch, p.warmup_epochs * steps_per_epoch)
    gen = torch.Generator().manual_seed(p.seed)
    hist = _History()
    best_score = None
    for epoch in range(epochs):
        model.train()
        perm = torch.randperm(n, generator=gen)
        total, t0 = 0.0, time.perf_counter()
        for start in range(0, n, p.batch_size):
            idx = perm[start : start + p.batch_size]
            if len(idx) == 1 and n > 1:  # a lone sample breaks BatchNorm heads; it is drawn again next epoch
                continue
            inputs, targets = batch_fn(idx)
            with _autocast(device, p.precision):
                loss = model.loss(model(inputs), targets).loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach())
        row = {"epoch": float(epoch), "loss": total / steps_per_epoch, "seconds": time.perf_counter() - t0}
        last = epoch == epochs - 1
        if evaluate_val is not None and ((epoch + 1) % p.val_every == 0 or last):
            val = evaluate_val()
            row.update(_prefixed("val_", val))
            if _better(task, val[task.primary_metric], best_score):
                best_score, hist.best_val, hist.best_epoch = val[task.primary_metric], val, epoch
                hist.best_state = copy.deepcopy(model.state_dict())
        hist.rows.append(row)
    return hist


@attrs.frozen
class FineTuneParams:
    """Attributes:
    lr: head lr; backbone_lr: backbone lr (FaRL: 1e-4 backbone, 1e-3 / 1e-2 heads).
    layer_decay: layer-wise lr decay for ViTs (block ``i`` of ``L`` gets ``layer_decay**(L-i)``;
        LAFS 0.58, MAE-style 0.65-0.75); None disables it.
    """

    epochs: int = 20
    min_steps: int = 100
    batch_size: int = 32
    lr: float = 1e-3
    backbone_lr: float = 1e-4
    layer_decay: float | None = 0.65
    weight_decay: float = 0.05
    warmup_epochs: int = 1
    val_every: int = 5
    num_workers: int = 0
    precision: Literal["fp32", "bf16"] = "fp32"
    device: str = "auto"
    seed: int = 0


class _Tuned(torch.nn.Module):
    def __init__(self, backbone: Backbone, head: Any) -> None:
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, images: torch.Tensor) -> Any:
        return self.head(self.head.select(self.backbone(self.backbone.preprocess(images))))

    def loss(self, output: Any, targets: dict[str, torch.Tensor]) -> Any:
        return self.head.loss(output, targets)


def backbone_param_groups(backbone: torch.nn.Module, lr: float, weight_decay: float, layer_decay: float | None) -> list[dict]:
    """timm's layer-decay groups when the model supports them (ViTs), else one group."""
    model = getattr(backbone, "model", backbone)
    if layer_decay is not None and hasattr(model, "group_matcher"):
        from timm.optim._param_groups import param_groups_layer_decay

        skip = model.no_weight_decay() if hasattr(model, "no_weight_decay") else set()
        groups = param_groups_layer_decay(model, weight_decay=weight_decay, no_weight_decay_list=skip, layer_decay=layer_decay)
        for g in groups:
            g["lr"] = lr * g.pop("lr_scale", 1.0)
        return groups
    return [{"params": [p for p in backbone.parameters() if p.requires_grad], "lr": lr, "weight_decay": weight_decay}]


class FineTune:
    """Backbone and head train together on augmented views (``task.prepare(train=True)``)."""

    name = "finetune"

    def __init__(self, params: FineTuneParams | None = None) -> None:
        self.params = params or FineTuneParams()

    def run(self, backbone: Backbone, task: Task, train: FaceDataset, test: FaceDataset, val: FaceDataset | None = None) -> EvalOutput:
        p = self.params
        device = resolve_device(p.device)
        backbone = copy.deepcopy(backbone).to(device)  # the caller's weights stay as they were
        for q in backbone.parameters():
            q.requires_grad_(True)
        torch.manual_seed(p.seed)
        head = task.build_head(backbone, train, linear=False).to(device)
        model = _Tuned(backbone, head)
        groups = backbone_param_groups(backbone, p.backbone_lr, p.weight_decay, p.layer_decay)
        groups.append({"params": list(head.parameters()), "lr": p.lr, "weight_decay": p.weight_decay})
        data = PreparedData(task, train, train=True, seed=p.seed)
        loader = _loader(data, p.batch_size, p.num_workers, shuffle=True, seed=p.seed)
        state: dict[str, Any] = {"it": iter(())}

        def batch_fn(idx: torch.Tensor) -> tuple[torch.Tensor, dict]:
            # fit_head hands out index batches; fine-tuning draws fresh augmented batches instead
            try:
                images, targets, _ = next(state["it"])
            except StopIteration:
                data.epoch += 1
                state["it"] = iter(loader)
                images, targets, _ = next(state["it"])
            return images.to(device), {k: v.to(device) for k, v in targets.items()}

        kw = dict(batch_size=p.batch_size, num_workers=p.num_workers, precision=p.precision)
        evaluate_val = (lambda: task.evaluate(predict_dataset(backbone, head, task, val, **kw), val)) if val is not None else None
        history = fit_head(model, batch_fn, len(train), p, task, evaluate_val, device, params=groups)
        preds = predict_dataset(backbone, head, task, test, **kw)
        metrics = task.evaluate(preds, test)
        history.add_best(metrics, model, lambda: task.evaluate(predict_dataset(backbone, head, task, test, **kw), test))
        return EvalOutput(metrics, preds, history.rows, backbone=backbone, head=head)
