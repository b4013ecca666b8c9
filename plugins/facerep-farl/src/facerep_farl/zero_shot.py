"""``farl.zero_shot``: attribute classification from text prompts, no labelled training.

For each attribute the text tower embeds "present" and "absent" prompts in the captioner's words,
over its four subjects (young/older woman/man; :func:`facerep_farl.captions.attribute_prompts`),
averaged per side (CLIP's prompt ensembling). With the image's cosines ``c+``, ``c-`` to the two
sides and the learned logit scale ``s``, the two-prompt softmax gives the log-odds
``s (c+ - c-)`` of "present" under a uniform class prior. Two decision rules:

- ``decision: closer``: present when ``c+ > c-`` (CLIP's argmax over the prompts: the uniform prior);
- ``decision: prior`` (default): present when ``s (c+ - c-) + log(p / (1 - p)) > 0``, the Bayes rule
  with the attribute's class prior ``p`` (Menon et al., "Long-tail learning via logit adjustment",
  ICLR 2021, eq. 3 applied post hoc). ``p`` is the attribute's frequency in the training split,
  which for FaRL's captioned CelebA is the frequency of its phrase in the pretraining captions.
  Most CelebA attributes are rare (median frequency ~ 0.2), and a uniform prior over-predicts them.

Neither rule reads a test label. The training split is read for its label *frequencies* only: the
prior above and each attribute's majority class, the baseline reported beside the accuracies
(``beats_majority``: how many attributes beat it on the test split, a raw count;
``beats_majority_resolved``: how many by a paired 95 % interval over the test images that lies
above zero; ``beats_majority_holm``: how many survive Holm's correction for the 40 tests at 5 %,
see :func:`beats_majority_tests`). ``auc_<attribute>`` /
``mean_auc`` score the prompt margin without a threshold (how well the text ranks the faces,
whatever the rule); ``closer_beats_majority`` is always reported for comparison.
"""

from __future__ import annotations

import math
from typing import Any

import attrs
import numpy as np
import torch
import torch.nn.functional as F

from facerep.config import positive
from facerep.errors import ConfigError

__all__ = ["ZeroShot", "ZeroShotParams", "beats_majority_tests", "load_joint_embedding", "roc_auc"]


def beats_majority_tests(correct: np.ndarray, majority_correct: np.ndarray, level: float = 0.95) -> tuple[int, int]:
    """How many attributes the zero-shot rule beats the majority class on, from per-image correctness
    ``(images, attributes)`` of both: ``(resolved, holm)``. ``resolved`` counts attributes whose
    paired 95 % interval of the accuracy difference (a bootstrap of the test images,
    :func:`facerep.eval.outcomes.paired_interval`) lies above zero; ``holm`` those whose two-sided
    test (normal, from the bootstrap's standard error) survives Holm's step-down at 1 - ``level``
    over all attributes, so that the count carries a family-wise 5 % error, not 5 % per attribute."""
    from facerep.eval.outcomes import ItemOutcomes, paired_interval

    gains, pvalues = [], []
    for a in range(correct.shape[1]):
        iv = paired_interval([ItemOutcomes(correct[:, a])], [ItemOutcomes(majority_correct[:, a])], level=level)
        gains.append(iv.low > 0)
        pvalues.append(math.erfc(abs(iv.estimate) / iv.se_items / math.sqrt(2)) if iv.se_items > 0 else 1.0)
    order, holm, alpha = np.argsort(pvalues), 0, 1 - level
    for k, a in enumerate(order):  # Holm (1979): the k-th smallest p against alpha / (m - k), stop at the first failure
        if pvalues[a] > alpha / (len(order) - k):
            break
        holm += int(correct[:, a].mean() > majority_correct[:, a].mean())
    return int(sum(gains)), holm


@attrs.frozen
class ZeroShotParams:
    """Attributes:
    joint: the ``joint_embedding.safetensors`` a FaRL run wrote beside its ``backbone.safetensors``.
    decision: ``prior`` (Bayes rule with the training split's attribute frequencies) or ``closer``
        (the closer prompt side); see the module docstring.
    batch_size, num_workers, precision, device: the image pass.
    """

    joint: str
    decision: str = attrs.field(default="prior", validator=attrs.validators.in_(("prior", "closer")))
    batch_size: int = attrs.field(default=256, validator=positive)
    num_workers: int = 0
    precision: str = "fp32"
    device: str = "auto"


def load_joint_embedding(path: str, image_width: int) -> Any:
    from facerep.checkpoint import read_module
    from facerep.config import structure
    from facerep.data.folder import expand_path
    from facerep_farl.farl import FaRLParams, JointEmbedding
    from facerep_farl.text import CaptionTokenizer

    state, meta = read_module(expand_path(path))
    objective = meta.get("objective") or {}
    params = structure(objective.get("params", {}), FaRLParams, path="objective.params", source=f"{path} (sidecar)")
    joint = JointEmbedding(image_width, params, CaptionTokenizer(params.context_length).vocab_size)
    try:
        joint.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ConfigError(f"{path}: does not fit a {image_width}-wide image tower ({str(exc).splitlines()[0]})") from None
    return joint.eval(), params


def roc_auc(score: np.ndarray, label: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U with tied ranks averaged); NaN for a one-class
    column. Threshold-free: how well the prompt margin ranks the faces, whatever its calibration."""
    pos = label.astype(bool)
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(score, kind="mergesort")
    ranks = np.empty(len(score))
    sorted_scores = score[order]
    i = 0
    while i < len(score):  # average ranks over ties
        j = i
        while j + 1 < len(score) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


class ZeroShot:
    name = "zero_shot"

    def __init__(self, params: ZeroShotParams) -> None:
        self.params = params

    @torch.no_grad()
    def run(self, backbone: Any, task: Any, train: Any, test: Any, val: Any = None) -> Any:
        from facerep.data.subset import label_array
        from facerep.eval.linear_probe import pooled_views
        from facerep.eval.protocols import EvalOutput, resolve_device
        from facerep_farl.captions import attribute_prompts
        from facerep_farl.text import CaptionTokenizer

        names = tuple(test.info.class_names.get("attributes", ()))
        if getattr(task, "probe_label", None) != "attributes" or not names:
            raise ConfigError(f"protocol farl.zero_shot scores attributes: task {getattr(task, 'name', task)} / dataset {test.info.name} "
                              f"have no named attributes")
        joint, fp = load_joint_embedding(self.params.joint, backbone.embed_dim)
        backbone.to(resolve_device(self.params.device))
        tok = CaptionTokenizer(fp.context_length)
        rows = []
        for n in names:  # CLIP's prompt ensembling: the mean of each list's unit embeddings, renormalised
            for prompts in attribute_prompts(n):
                ids = torch.from_numpy(np.stack([tok(t) for t in prompts]))
                rows.append(F.normalize(F.normalize(joint.encode_text(ids).float(), dim=1).mean(0), dim=0))
        text = torch.stack(rows).view(len(names), 2, -1)  # (A, 2, d): present, absent
        views, metas = pooled_views(backbone, task, test, self.params)
        scores = []
        for v in views:
            img = F.normalize(joint.encode_image(torch.from_numpy(v).float()), dim=1)  # (N, d)
            sims = torch.einsum("nd,apd->nap", img, text)
            scores.append(sims[..., 0] - sims[..., 1])
        margin = torch.stack(scores).mean(0)  # (N, A) present-minus-absent cosine, views averaged
        y_train, y_test = label_array(train, "attributes"), label_array(test, "attributes")
        prior = torch.from_numpy(y_train.mean(0)).double().clamp(1e-4, 1 - 1e-4)
        log_odds = float(joint.scale()) * margin.double() + torch.log(prior / (1 - prior))
        decided = log_odds if self.params.decision == "prior" else margin
        preds = task.predict([decided], metas)
        metrics = task.evaluate(preds, test)
        majority = (y_train.mean(0) >= 0.5).astype(np.uint8)
        majority_acc = (y_test == majority).mean(0)
        zs_acc = np.array([metrics[f"acc_{n}"] for n in names])
        closer_acc = ((margin.numpy() > 0) == y_test).mean(0)
        metrics.update(majority_mean_acc=float(majority_acc.mean()), beats_majority=float((zs_acc > majority_acc).sum()),
                       closer_beats_majority=float((closer_acc > majority_acc).sum()), logit_scale=float(joint.scale()))
        metrics.update({f"majority_acc_{n}": float(a) for n, a in zip(names, majority_acc, strict=True)})
        resolved, holm = beats_majority_tests(np.stack(preds).astype(np.uint8) == y_test, y_test == majority)
        metrics.update(beats_majority_resolved=float(resolved), beats_majority_holm=float(holm))
        auc = np.array([roc_auc(margin[:, i].numpy(), y_test[:, i]) for i in range(len(names))])
        metrics.update(mean_auc=float(np.nanmean(auc)), **{f"auc_{n}": float(a) for n, a in zip(names, auc, strict=True)})
        return EvalOutput(metrics, preds)
