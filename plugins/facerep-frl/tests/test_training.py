"""Short real training runs: a timm ResNet on synthetic faces, views from the objectives' own
transforms, fresh views every step. They must lower the loss on a fixed held-out batch of views
without collapsing, and move the backbone's features.

The faces are SYNTHETIC (``facerep.data.synthetic``): this checks that the methods learn, not what
they learn.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from facerep.data.synthetic import SyntheticFaces
from facerep.testing import build_objective

STEPS, BATCH = 20, 32


def _views(obj, faces, seed: int) -> list[torch.Tensor]:
    transform = obj.view_transform()
    per_sample = [transform(face, np.random.default_rng([seed, i])) for i, face in enumerate(faces)]
    return [obj.backbone.preprocess(torch.from_numpy(np.stack([v[j] for v in per_sample])).permute(0, 3, 1, 2).contiguous())
            for j in range(len(per_sample[0]))]


def _train(obj, faces, lr: float) -> list[float]:
    opt = torch.optim.SGD([p for p in obj.parameters() if p.requires_grad], lr=lr, momentum=0.9, weight_decay=1e-6)
    rng = np.random.default_rng(0)
    obj.train()
    losses = []
    for step in range(STEPS):
        idx = rng.choice(len(faces), BATCH, replace=False)
        out = obj(_views(obj, [faces[i] for i in idx], step))
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        obj.before_optimizer_step(step)
        opt.step()
        obj.after_optimizer_step(step, STEPS)
        assert np.isfinite(out.loss.item()) and all(np.isfinite(v) for v in out.logs.values())
        losses.append(out.loss.item())
    return losses


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Small CPU convolutions gain little from threads, and OpenMP threads spin (and crawl) on a
    busy machine: these runs take a few seconds on one thread."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def faces():
    ds = SyntheticFaces(n=128, size=48, n_identities=16, seed=0)
    return [ds[i] for i in range(len(ds))]


def test_swav_lowers_its_loss_on_held_out_views_without_collapse(frl_plugins, faces):
    torch.manual_seed(0)
    obj = build_objective("frl.swav", dict(n_prototypes=30, out_dim=32, hidden_dim=128, global_size=40, local_size=20, local_crops=2,
                                           freeze_prototypes_steps=5), backbone="resnet10t")
    held_out = _views(obj, faces[:BATCH], seed=999)

    def evaluate() -> tuple[float, torch.Tensor, float]:
        obj.eval()
        with torch.no_grad():
            out = obj(held_out)
            return out.loss.item(), obj.backbone(held_out[0]).pooled.clone(), out.logs["z_std"]

    loss0, feats0, std0 = evaluate()
    _train(obj, faces, lr=0.005)
    loss1, feats1, std1 = evaluate()
    assert loss1 < 0.9 * loss0, (loss0, loss1)
    assert std1 > 0.3 * std0, f"embeddings collapsed: z_std {std0:.3f} -> {std1:.3f}"
    assert not torch.allclose(feats0, feats1)


def test_moco_improves_instance_discrimination_on_held_out_views(frl_plugins, faces):
    torch.manual_seed(0)
    params = dict(queue_size=256, momentum=0.99, out_dim=32, hidden_dim=128, view_size=40)
    obj = build_objective("frl.moco_v2", params, backbone="resnet10t")
    held_out = _views(obj, faces[:BATCH], seed=999)

    def evaluate() -> tuple[float, torch.Tensor]:
        # Instance discrimination by the online encoder (what is exported): InfoNCE of each view-0
        # query against the view-1 queries of the held-out batch. The training loss itself is not
        # comparable across these few steps: the queue starts random and fills with real keys
        # during the first queue_size / batch steps, so it rises at first (MoCo's normal start).
        obj.eval()
        with torch.no_grad():
            q, q_other = obj.query(held_out[0]), obj.query(held_out[1])
            loss = F.cross_entropy(q @ q_other.T / obj.params.temperature, torch.arange(len(q)))
            return loss.item(), obj.backbone(held_out[0]).pooled.clone()

    loss0, feats0 = evaluate()
    losses = _train(obj, faces, lr=0.003)
    loss1, feats1 = evaluate()
    assert loss1 < loss0 - 0.1, (loss0, loss1)  # 3.39 -> 3.20 (chance: log 32 = 3.47)
    assert not torch.allclose(feats0, feats1)
    assert int(obj.queue_ptr) == (STEPS * BATCH) % 256
    assert len(losses) == STEPS
