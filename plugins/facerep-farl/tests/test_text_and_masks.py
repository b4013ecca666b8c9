"""The caption tokenizer round-trips (CLIP BPE, offline), captions come from attribute labels, and
the views carry token ids and a blockwise mask of the configured ratio."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from facerep.errors import DataError
from facerep.types import Sample
from facerep_farl.captions import attribute_caption
from facerep_farl.text import CaptionTokenizer
from facerep_farl.views import CaptionedMaskedViews

CELEBA_40 = ("5_o_Clock_Shadow Arched_Eyebrows Attractive Bags_Under_Eyes Bald Bangs Big_Lips Big_Nose Black_Hair Blond_Hair Blurry "
             "Brown_Hair Bushy_Eyebrows Chubby Double_Chin Eyeglasses Goatee Gray_Hair Heavy_Makeup High_Cheekbones Male "
             "Mouth_Slightly_Open Mustache Narrow_Eyes No_Beard Oval_Face Pale_Skin Pointy_Nose Receding_Hairline Rosy_Cheeks "
             "Sideburns Smiling Straight_Hair Wavy_Hair Wearing_Earrings Wearing_Hat Wearing_Lipstick Wearing_Necklace "
             "Wearing_Necktie Young").split()


@pytest.mark.parametrize("caption", ["a photo of a smiling woman with blond hair, wearing eyeglasses",
                                     "a photo of an older man with a five o'clock shadow and a beard",
                                     "an x-ray of a 3.5 year old (smiling)!"])
def test_captions_round_trip_through_clip_bpe(caption):
    tok = CaptionTokenizer(77)
    ids = tok(caption)
    assert ids.dtype == np.int64 and ids.shape == (77,)
    assert ids[0] == 49406 and 49407 in ids, "CLIP's <start> and <end> ids"
    end = int(np.flatnonzero(ids == 49407)[0])
    assert (ids[end + 1 :] == 0).all() and ids.argmax() == end, "the end token has the highest id (pooling position)"
    assert tok.decode(ids) == caption
    assert np.array_equal(tok(tok.decode(ids)), ids)
    assert np.array_equal(tok(caption.upper().replace(" ", "  ")), ids), "CLIP lower-cases and normalises whitespace"
    again = pickle.loads(pickle.dumps(tok))
    assert np.array_equal(again(caption), ids)


def test_long_captions_are_cut_and_still_end_with_the_end_token():
    tok = CaptionTokenizer(8)
    ids = tok("a photo of a smiling woman with blond hair and eyeglasses and a hat")
    assert ids.shape == (8,) and ids[-1] == 49407 and (ids != 0).all()


def test_attribute_captions_say_what_the_labels_say():
    on = lambda *names: np.array([n in names for n in CELEBA_40], dtype=np.uint8)
    assert attribute_caption(on("Smiling", "Young", "Blond_Hair", "Eyeglasses", "No_Beard"), CELEBA_40) == \
        "a photo of a smiling young woman with blond hair, wearing eyeglasses"
    assert attribute_caption(on("Male", "Mustache", "Wearing_Hat", "Wearing_Necktie"), CELEBA_40) == \
        "a photo of an older man with a mustache and a beard, wearing a hat and a necktie"
    assert attribute_caption(on("Male", "No_Beard", "Young", "Bald"), CELEBA_40) == "a photo of a young man with a bald head"


def test_views_carry_token_ids_and_a_blockwise_mask_of_the_configured_ratio():
    img = np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    views = CaptionedMaskedViews(size=32, grid=(4, 4), mask_ratio=0.4, min_block=2, tokenizer=CaptionTokenizer(16), mask_style="exact")
    out = views(Sample(image=img, caption="a photo of a man"), np.random.default_rng(1))
    assert out.images[0].shape == (32, 32, 3)
    assert out.extras["text"].shape == (16,) and CaptionTokenizer(16).decode(out.extras["text"]) == "a photo of a man"
    assert out.extras["mim_mask"].dtype == bool and out.extras["mim_mask"].sum() == round(0.4 * 16), "exact: the count asked"
    beit = CaptionedMaskedViews(size=64, grid=(8, 8), mask_ratio=0.4, min_block=4, tokenizer=CaptionTokenizer(16))
    counts = [beit(Sample(image=img, caption="a man"), np.random.default_rng(i)).extras["mim_mask"].sum() for i in range(50)]
    assert max(counts) <= round(0.4 * 64) and np.mean(counts) > 0.9 * round(0.4 * 64), "beit (default): at most the count asked"
    with pytest.raises(DataError, match=r"x\.jpg: FaRL trains on image-text pairs"):
        views(Sample(image=img, meta={"path": "x.jpg"}), np.random.default_rng(1))


def test_zero_shot_prompts_use_the_captioners_subjects_and_cover_all_40_attributes():
    from facerep_farl.captions import attribute_prompts

    for name in CELEBA_40:
        present, absent = attribute_prompts(name)
        assert present and absent and not set(present) & set(absent), name
        assert all(p.startswith("a photo of") and ("woman" in p or "man" in p) for p in present + absent), name
    assert attribute_prompts("Smiling")[0][0] == "a photo of a smiling young woman"
    assert attribute_prompts("Male") == (["a photo of a young man", "a photo of an older man"],
                                         ["a photo of a young woman", "a photo of an older woman"])


def test_zero_shot_decision_rule_is_checked_where_the_config_names_it():
    from facerep.config import structure
    from facerep.errors import ConfigError
    from facerep_farl.zero_shot import ZeroShotParams

    assert structure({"joint": "j.safetensors"}, ZeroShotParams).decision == "prior"
    with pytest.raises(ConfigError, match="decision"):
        structure({"joint": "j.safetensors", "decision": "argmax"}, ZeroShotParams, path="evaluate.0.protocols.0.params")


def test_beats_majority_counts_only_what_the_test_images_resolve():
    from facerep_farl.zero_shot import beats_majority_tests

    rng = np.random.default_rng(0)
    n = 800
    majority = rng.random((n, 4)) < 0.8  # the majority class right on 80 % of the images
    zero_shot = majority.copy()
    zero_shot[:, 0] |= rng.random(n) < 0.5  # right on ~90 %: +0.1, about 9 standard errors
    zero_shot[:3, 2] = ~zero_shot[:3, 2]  # +- 3 images: a raw win or loss that nothing resolves (z <= sqrt 3)
    zero_shot[:, 3] = ~majority[:, 3]  # right on 20 %: resolved, the other way
    raw = int((zero_shot.mean(0) > majority.mean(0)).sum())
    resolved, holm = beats_majority_tests(zero_shot, majority)
    assert (resolved, holm) == (1, 1) and raw >= 1
    # forty attributes where the rule equals the majority up to a few images: raw wins, nothing resolved
    same = rng.random((n, 40)) < 0.8
    flipped = same.copy()
    flipped[rng.integers(0, n, 40), np.arange(40)] ^= True
    assert beats_majority_tests(flipped, same) == (0, 0) and int((flipped.mean(0) > same.mean(0)).sum()) > 5
