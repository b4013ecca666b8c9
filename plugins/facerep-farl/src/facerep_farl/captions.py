"""Captions for offline image-text pretraining, written from CelebA's 40 attribute labels
("a photo of a smiling young woman with blond hair, wearing eyeglasses"), and a dataset wrapper
that adds them to any facerep dataset whose samples carry those attributes.

The captioner reads labels only. What keeps the evaluation honest is *which images* it captions:
the wrapper is given the pretraining range of CelebA (the development split's 1-8000), never the
attribute test range (8001-10000) that ``farl.zero_shot`` and the probes score on.
"""

from __future__ import annotations

from typing import Any

import attrs
import numpy as np

from facerep.errors import ConfigError
from facerep.types import Sample

__all__ = ["CaptionedDataset", "CaptionedParams", "attribute_caption", "attribute_prompts"]

_HAIR = {"Bald": "a bald head", "Black_Hair": "black hair", "Blond_Hair": "blond hair", "Brown_Hair": "brown hair",
         "Gray_Hair": "gray hair"}
_ADJ = [("Smiling", "smiling"), ("Attractive", "attractive"), ("Chubby", "chubby")]
_WITH = {"Wavy_Hair": "wavy hair", "Straight_Hair": "straight hair", "Bangs": "bangs", "Receding_Hairline": "a receding hairline",
         "Mustache": "a mustache", "Goatee": "a goatee", "Sideburns": "sideburns", "5_o_Clock_Shadow": "a five o'clock shadow",
         "Big_Lips": "big lips", "Big_Nose": "a big nose", "Pointy_Nose": "a pointy nose", "Oval_Face": "an oval face",
         "Double_Chin": "a double chin", "High_Cheekbones": "high cheekbones", "Rosy_Cheeks": "rosy cheeks", "Pale_Skin": "pale skin",
         "Arched_Eyebrows": "arched eyebrows", "Bushy_Eyebrows": "bushy eyebrows", "Narrow_Eyes": "narrow eyes",
         "Bags_Under_Eyes": "bags under the eyes", "Mouth_Slightly_Open": "a slightly open mouth", "Heavy_Makeup": "heavy makeup"}
_WEARING = {"Eyeglasses": "eyeglasses", "Wearing_Hat": "a hat", "Wearing_Earrings": "earrings", "Wearing_Lipstick": "lipstick",
            "Wearing_Necklace": "a necklace", "Wearing_Necktie": "a necktie"}


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def attribute_caption(attributes: np.ndarray, names: tuple[str, ...]) -> str:
    """One deterministic caption from a 0/1 attribute vector named by ``names`` (CelebA's 40)."""
    on = {n for n, v in zip(names, attributes, strict=True) if v}
    person = "man" if "Male" in on else "woman"
    if "No_Beard" not in on and "Male" in on:
        on.add("_beard")
    adj = [word for key, word in _ADJ if key in on] + (["young"] if "Young" in on else ["older"])
    text = f"a photo of {'an' if adj[0][0] in 'aeiou' else 'a'} {' '.join(adj)} {person}"
    withs = [_HAIR[k] for k in _HAIR if k in on] + [_WITH[k] for k in _WITH if k in on] + (["a beard"] if "_beard" in on else [])
    if withs:
        text += " with " + _join(withs)
    wearing = [_WEARING[k] for k in _WEARING if k in on]
    if wearing:
        text += ", wearing " + _join(wearing)
    if "Blurry" in on:
        text += ", blurry"
    return text


#: Who the prompts describe: the captioner's own subjects (its captions never say "person").
_SUBJECTS = ("a young woman", "an older woman", "a young man", "an older man")


def attribute_prompts(name: str) -> tuple[list[str], list[str]]:
    """``(present, absent)`` prompt lists for one CelebA attribute, in the captioner's grammar, over
    its four subjects (zero-shot scores average each list's unit text embeddings: CLIP's prompt
    ensembling, Radford et al. 2021, Sec. 3.1.4)."""

    def photo(subject: str, adjective: str = "", tail: str = "") -> str:
        words = f"{adjective} {subject.split(' ', 1)[1]}" if adjective else subject.split(" ", 1)[1]
        article = "an" if words[0] in "aeiou" else "a"
        return f"a photo of {article} {words}{tail}"

    base = [photo(s) for s in _SUBJECTS]
    if name == "Male":
        return [photo(s) for s in _SUBJECTS if s.endswith(" man")], [photo(s) for s in _SUBJECTS if s.endswith("woman")]
    if name == "Young":
        return [photo(s) for s in _SUBJECTS if "young" in s], [photo(s) for s in _SUBJECTS if "older" in s]
    if name == "No_Beard":
        men = [s for s in _SUBJECTS if s.endswith(" man")]
        return [photo(s) for s in men], [photo(s, tail=" with a beard") for s in men]
    if name == "Blurry":
        return [p + ", blurry" for p in base], base
    adjectives = dict(_ADJ)
    if name in adjectives:
        return [photo(s, adjective=adjectives[name]) for s in _SUBJECTS], base
    if name in _HAIR or name in _WITH:
        return [photo(s, tail=f" with {_HAIR.get(name) or _WITH[name]}") for s in _SUBJECTS], base
    if name in _WEARING:
        return [photo(s, tail=f", wearing {_WEARING[name]}") for s in _SUBJECTS], base
    raise KeyError(f"no prompt for attribute {name!r} (CelebA's 40 are known)")


@attrs.frozen
class CaptionedParams:
    """Attributes:
    dataset: the wrapped dataset as ``{name, params}`` (e.g. ``attributes.celeba`` with ``stop: 8000``).
    captioner: ``celeba_attributes`` (the only one so far: captions from the samples' attributes).
    """

    dataset: dict[str, Any]
    captioner: str = "celeba_attributes"


class CaptionedDataset:
    """Samples of the wrapped dataset with ``caption`` set by the captioner."""

    def __init__(self, params: CaptionedParams) -> None:
        from facerep.build import build, resolve
        from facerep.config import ComponentConfig, structure

        if params.captioner != "celeba_attributes":
            raise ConfigError(f"data.params.captioner: unknown captioner {params.captioner!r}; choose celeba_attributes")
        comp = structure(params.dataset, ComponentConfig, path="data.params.dataset")
        self.inner = build(resolve("dataset", comp, "data.params.dataset"))
        self.names = tuple(self.inner.info.class_names.get("attributes", ()))
        if "attributes" not in self.inner.info.labels or len(self.names) != 40:
            raise ConfigError(f"data.params.dataset: {comp.name} must give CelebA's 40 attributes to write captions from")
        self.info = attrs.evolve(self.inner.info, labels=(*self.inner.info.labels, "caption"))

    def __len__(self) -> int:
        return len(self.inner)

    def __getitem__(self, index: int) -> Sample:
        sample = self.inner[index]
        sample.caption = attribute_caption(sample.attributes, self.names)
        return sample
