"""LAFS against numbers produced by the official code (``szlbiubiubiu/LAFS_CVPR2024`` at 320c57d)
on fixed tiny inputs: ``reference/lafs.safetensors`` + ``lafs.json``, written by
``scripts/faithfulness/lafs_reference.py`` (its docstring: the command, the stubs, the sizes).

facerep is built from the paper preset (``lafs/lafs_vit_b16_paper``: the landmark ViT's official
options, the objective's values, the ``train`` block with per-tensor clipping, decayed position / CLS
embeddings, warm-up from 0) with only the sizes, the step counts and the EMA base shrunk to the
fixture's. Compared: the student's and teacher's logits, the loss and every gradient of step 0,
the per-iteration schedules, and a 3-step trajectory through the runner's own training step
(``facerep.testing.steps.runner_steps``) against the official ``train_one_epoch`` loop: losses, the
final student, the EMA teacher and the centre. Dropout and drop-path are 0 on both sides (the
official teacher never enters eval mode; facerep's always is: a listed difference).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

import facerep_lafs
from facerep.config import structure
from facerep_lafs.lafs import LAFSObjective, LAFSParams
from facerep_lafs.landmark_vit import LandmarkViT, LandmarkViTParams

REFERENCE = Path(__file__).parent / "reference"
PRESET = Path(facerep_lafs.__file__).parent / "configs" / "lafs_vit_b16_paper.yaml"


@pytest.fixture(scope="module")
def ref() -> tuple[dict[str, torch.Tensor], dict]:
    from safetensors.torch import load_file

    return load_file(REFERENCE / "lafs.safetensors"), json.loads((REFERENCE / "lafs.json").read_text())


@pytest.fixture(scope="module")
def preset() -> dict:
    return yaml.safe_load(PRESET.read_text())


def _objective(preset: dict, meta: dict, tensors: dict[str, torch.Tensor]) -> LAFSObjective:
    s, r = meta["sizes"], meta["recipe"]
    bb = dict(preset["backbone"]["params"])
    bb.update(n_landmarks=s["global_points"], patch=s["patch"], input_size=s["image"], embed_dim=s["dim"], depth=s["depth"],
              heads=s["heads"], head_dim=s["head_dim"], mlp_ratio=s["mlp"] / s["dim"], drop_path_rate=0.0, dropout=0.0)
    op = dict(preset["objective"]["params"])
    assert (op["student_temperature"], op["warmup_teacher_temperature"], op["teacher_temperature"]) == \
        (r["student_temp"], r["warmup_teacher_temp"], r["teacher_temp"])
    op.update(n_prototypes=s["prototypes"], hidden_dim=s["hidden"], bottleneck_dim=s["bottleneck"], local_crops=s["local_views"],
              local_landmarks=s["local_points"], momentum=r["momentum_teacher"], freeze_prototypes_steps=r["freeze_last_layer"],
              # the official linspace over E epochs reaches its end at epoch E - 1 (the preset: 29 x 1,256 steps)
              teacher_temperature_warmup_steps=r["warmup_teacher_temp_epochs"] - 1)
    torch.manual_seed(0)
    obj = LAFSObjective(structure(op, LAFSParams), backbone=LandmarkViT(structure(bb, LandmarkViTParams)))
    init = {k.removeprefix("init/"): v for k, v in tensors.items() if k.startswith("init/")}
    state = {**init, **{"teacher_" + k: v for k, v in init.items()}}
    missing, unexpected = obj.load_state_dict(state, strict=False)
    assert not unexpected and set(missing) == {"centre.centre", "step"}, (missing, unexpected)
    return obj


def _batch(tensors: dict[str, torch.Tensor], step: int, n_views: int) -> dict:
    return {"views": [tensors[f"step{step}/view{v}"] for v in range(n_views)],
            "extras": {"global_points": tensors[f"step{step}/global_points"], "local_points": tensors[f"step{step}/local_points"]}}


def _train_block(preset: dict, meta: dict) -> dict:
    r, train = meta["recipe"], dict(preset["train"])
    assert train["grad_clip_mode"] == "per_tensor" and train["optimizer"]["no_decay"] == ["bias"]
    assert train["schedule"]["warmup_start_factor"] == 0.0
    assert train["schedule"]["final_factor"] == pytest.approx(r["min_lr"] / r["peak_lr"])
    assert (train["optimizer"]["weight_decay"], train["schedule"]["final_weight_decay"]) == (r["weight_decay"], r["weight_decay_end"])
    for key in ("launcher", "device", "num_workers", "checkpoint_every", "log_every"):
        train.pop(key, None)
    train.update(max_steps=r["epochs"], batch_size=meta["sizes"]["batch"], precision="fp32", grad_clip=r["clip_grad"])
    train["optimizer"] = {**train["optimizer"], "lr": r["lr_arg"]}
    train["schedule"] = {**train["schedule"], "warmup_steps": r["warmup_epochs"]}
    return train


def test_step0_logits_loss_and_gradients_equal_the_official_code(ref, preset, one_torch_thread):
    tensors, meta = ref
    obj = _objective(preset, meta, tensors)
    obj.train()
    batch = _batch(tensors, 0, 2 + meta["sizes"]["local_views"])
    views, extras = batch["views"], batch["extras"]
    with torch.no_grad():
        student = torch.cat([obj._logits(obj.backbone, obj.head, views[:2], extras["global_points"]),
                             obj._logits(obj.backbone, obj.head, views[2:], extras["local_points"])])
        teacher = obj._logits(obj.teacher_backbone, obj.teacher_head, views[:2], extras["global_points"])
    torch.testing.assert_close(student, tensors["step0/student_logits"], rtol=0, atol=1e-5)
    torch.testing.assert_close(teacher, tensors["step0/teacher_logits"], rtol=0, atol=1e-5)
    out = obj(views, extras)
    assert out.loss.item() == pytest.approx(meta["step0_loss"], rel=1e-5)
    out.loss.backward()
    params = dict(obj.named_parameters())
    grads = {k.removeprefix("grad/"): v for k, v in tensors.items() if k.startswith("grad/")}
    assert set(grads) == {n for n, p in params.items() if p.requires_grad}
    for name, want in grads.items():
        torch.testing.assert_close(params[name].grad, want, rtol=0, atol=1e-5 * float(want.abs().max()), msg=name)


@pytest.mark.filterwarnings("ignore:Detected call of `scheduler.step\\(\\)` before")
def test_schedules_per_iteration_equal_the_official_ones(ref, preset):
    from facerep.testing.steps import assert_dino_schedules

    tensors, meta = ref
    assert_dino_schedules(_train_block(preset, meta), meta["recipe"], tensors)


def test_three_steps_of_the_runner_follow_the_official_train_one_epoch(ref, preset, one_torch_thread):
    from facerep.testing.steps import runner_steps

    tensors, meta = ref
    assert min(meta["clip"]["tensors_clipped_per_step"]) > 0, "the per-tensor clip must bite in every step"
    obj = _objective(preset, meta, tensors)
    n_views = 2 + meta["sizes"]["local_views"]
    batches = [_batch(tensors, s, n_views) for s in range(meta["recipe"]["steps_run"])]
    logs, _ = runner_steps(obj, batches, _train_block(preset, meta), global_batch=meta["sizes"]["batch"])
    losses = [log["loss"] for log in logs]
    assert losses == pytest.approx(meta["losses"], rel=1e-5)
    state = obj.state_dict()
    finals = {k.removeprefix("final/"): v for k, v in tensors.items() if k.startswith("final/") and k != "final/centre"}
    for name, want in finals.items():
        torch.testing.assert_close(state[name], want, rtol=0, atol=1e-5, msg=name)
    torch.testing.assert_close(obj.centre.centre, tensors["final/centre"], rtol=0, atol=1e-6)
    init_protos = tensors["init/head.prototypes"]
    assert not torch.equal(state["head.prototypes"], init_protos), "the prototypes move once unfrozen (step 2)"


def test_the_preset_builds_the_released_landmark_vit(ref, preset, one_torch_thread):
    """The preset's ViT at full size against the official ``ViT_face_landmark_patch8`` of
    ``lafs_train.py:302-331`` (196 points there, 68 in the preset: compared at 196)."""
    import math

    released = ref[1]["released_vit"]
    torch.manual_seed(0)
    vit = LandmarkViT(structure({**preset["backbone"]["params"], "n_landmarks": 196}, LandmarkViTParams))
    shapes = {k.removeprefix("backbone."): v for k, v in released["shapes"].items()}
    assert {k: list(v.shape) for k, v in vit.state_dict().items()} == shapes
    attn = vit.blocks[0].attn
    assert attn.num_heads == released["heads"] and attn.scale == pytest.approx(released["attention_scale"])
    assert (attn.qkv.bias is not None) == released["qkv_bias"]
    assert sorted({m.eps for m in vit.modules() if isinstance(m, torch.nn.LayerNorm)}) == released["layer_norm_eps"]
    assert [m.drop_prob for b in vit.blocks for m in (b.drop_path1, b.drop_path2)] == released["drop_path_rates"]
    assert float(vit.pos_embed.detach().std()) == pytest.approx(released["pos_embed_std"], rel=0.05)
    assert float(attn.qkv.weight.detach().std()) == pytest.approx(released["qkv_weight_std"], rel=0.02)
    assert float(vit.patch_embed.bias.detach().std()) == pytest.approx(1 / math.sqrt(3 * 192), rel=0.1)  # nn.Linear's default, as released
