"""Face parsing: CelebAMask-HQ in both layouts, dataset-level F1, the inverse warp, the mmcv-lite
shim and mmseg's UPerHead training on CPU."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from facerep.backbones.timm_backbone import TimmBackbone, TimmBackboneParams
from facerep.data.folder import expand_path
from facerep.errors import DataError
from facerep.types import Sample
from facerep_parsing.celebamask import CLASSES, CelebAMaskHQ, CelebAMaskParams
from facerep_parsing.metrics import confusion, parsing_metrics
from facerep_parsing.mmcv_compat import install, point_sample
from facerep_parsing.task import FaceParsing, ParsingParams

CMHQ = expand_path("${FACEREP_DATA}/celebamask_hq/train")
needs_data = pytest.mark.skipif(not (CMHQ / "masks").is_dir(), reason="needs ../shared/data/celebamask_hq (or $FACEREP_DATA)")


def _palette_png(path, mask):
    im = Image.fromarray(mask.astype(np.uint8), mode="P")
    im.putpalette([v for i in range(256) for v in ((i * 37) % 256, (i * 91) % 256, (i * 53) % 256)])
    im.save(path)


@pytest.mark.realdata
@needs_data
def test_real_subset_has_500_aligned_512px_faces_with_19_class_masks():
    ds = CelebAMaskHQ()
    assert len(ds) == 500 and ds.info.class_names["mask"] == CLASSES
    s = ds[0]
    assert s.image.shape == (512, 512, 3) and s.mask.shape == (512, 512) and s.mask.max() <= 18
    assert 1 in s.mask and 13 in np.unique(ds[1].mask).tolist() + np.unique(s.mask).tolist()  # skin, hair
    assert len(CelebAMaskHQ(CelebAMaskParams(stop=400))) == 400 and len(CelebAMaskHQ(CelebAMaskParams(start=400))) == 100


def test_index_layout_reads_palette_indices_and_rejects_bad_values(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    cv2.imwrite(str(tmp_path / "images" / "a.jpg"), np.zeros((8, 8, 3), np.uint8))
    mask = np.zeros((8, 8), np.uint8)
    mask[2:5, 2:5] = 13
    _palette_png(tmp_path / "masks" / "a.png", mask)
    ds = CelebAMaskHQ(CelebAMaskParams(root=str(tmp_path)))
    np.testing.assert_array_equal(ds[0].mask, mask)  # the palette index, not the palette colour
    mask[0, 0] = 19
    _palette_png(tmp_path / "masks" / "a.png", mask)
    with pytest.raises(DataError, match=r"a.png: mask value\(s\) \[19\] outside the 19 classes"):
        ds[0]
    cv2.imwrite(str(tmp_path / "images" / "b.jpg"), np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(DataError, match=r"1 mask\(s\) missing, e.g. .*b.png"):
        CelebAMaskHQ(CelebAMaskParams(root=str(tmp_path)))


def test_parts_layout_merges_the_release_part_masks_in_order(tmp_path):
    (tmp_path / "CelebA-HQ-img").mkdir()
    cv2.imwrite(str(tmp_path / "CelebA-HQ-img" / "2001.jpg"), np.full((1024, 1024, 3), 90, np.uint8))
    anno = tmp_path / "CelebAMask-HQ-mask-anno" / "1"  # 2001 // 2000
    anno.mkdir(parents=True)
    skin = np.zeros((512, 512), np.uint8)
    skin[100:400, 100:400] = 255
    nose = np.zeros((512, 512), np.uint8)
    nose[200:250, 200:250] = 255
    cv2.imwrite(str(anno / "02001_skin.png"), skin)
    cv2.imwrite(str(anno / "02001_nose.png"), nose)
    s = CelebAMaskHQ(CelebAMaskParams(root=str(tmp_path), layout="parts"))[0]
    assert s.image.shape == (512, 512, 3)  # resized onto the mask grid
    assert s.mask[150, 150] == 1 and s.mask[220, 220] == 2 and s.mask[50, 50] == 0  # nose painted over skin


def test_dataset_level_f1_differs_from_the_mean_of_per_image_f1():
    gt1, pr1 = np.array([[1, 1, 1, 1]]), np.array([[1, 1, 1, 1]])  # class 1: 4 TP
    gt2, pr2 = np.array([[1, 0, 0, 0]]), np.array([[0, 1, 0, 0]])  # class 1: 1 FN, 1 FP
    cm = confusion(pr1, gt1, 3) + confusion(pr2, gt2, 3)
    m = parsing_metrics(cm, ("bg", "skin", "nose"))
    assert m["f1_skin"] == pytest.approx(2 * 4 / (2 * 4 + 1 + 1))  # 0.8 over the dataset (per image: (1 + 0) / 2)
    assert m["f1_bg"] == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))
    assert "f1_nose" not in m and m["mean_f1"] == pytest.approx(0.8)  # absent class left out, background excluded
    assert m["pixel_acc"] == pytest.approx(6 / 8)


def test_prepare_then_predict_returns_the_mask_in_the_original_geometry():
    mask = np.zeros((60, 80), np.uint8)
    mask[10:50, 20:60] = 1
    mask[25:35, 35:45] = 2
    s = Sample(image=np.zeros((60, 80, 3), np.uint8), mask=mask)
    task = FaceParsing(ParsingParams(input_size=48))
    task.class_names = ("bg", "a", "b")
    for train in (False, True):
        prep = task.prepare(s, train=train, rng=np.random.default_rng(2))
        logits = torch.nn.functional.one_hot(torch.from_numpy(prep.target["mask"]), 3).permute(2, 0, 1).float()[None]
        back = task.predict([logits], [prep.meta])[0]
        inside = (back == mask)[15:45, 25:55]  # away from the warp's border
        assert back.shape == (60, 80) and inside.mean() > 0.97


def test_mmcv_shim_point_sample_and_unavailable_ops():
    x = torch.arange(16.0).view(1, 1, 4, 4)
    pts = torch.tensor([[[0.125, 0.125], [0.625, 0.375]]])  # pixel centres (0, 0) and (2, 1)
    torch.testing.assert_close(point_sample(x, pts), torch.tensor([[[0.0, 6.0]]]))
    install()
    import mmcv.ops

    if getattr(mmcv.ops, "__facerep_shim__", False):
        with pytest.raises(RuntimeError, match="needs compiled mmcv ops"):
            mmcv.ops.PSAMask()
        assert install() is True


@pytest.mark.realdata
@needs_data
def test_uperhead_from_mmseg_trains_on_real_faces_on_cpu():
    from facerep.data.subset import Subset
    from facerep.eval.protocols import FrozenHead, FrozenHeadParams
    from facerep_parsing.heads import UPerParsingHead

    train = Subset(CelebAMaskHQ(), np.arange(8))
    test = Subset(CelebAMaskHQ(CelebAMaskParams(start=400, split="test")), np.arange(4))
    torch.manual_seed(0)
    vit = TimmBackbone(
        TimmBackboneParams(model="vit_tiny_patch16_224", img_size=32, patch_size=8, layers=(0, 1, 2, 3), model_kwargs={"depth": 4})
    )
    task = FaceParsing(ParsingParams(input_size=32, channels=32))
    head = task.build_head(vit, train, linear=False)
    assert isinstance(head, UPerParsingHead) and type(head.decode).__module__.startswith("mmseg.")
    out = FrozenHead(FrozenHeadParams(epochs=25, min_steps=0, batch_size=8, lr=3e-3)).run(vit, task, train, test)
    assert out.history[-1]["loss"] < 0.7 * out.history[0]["loss"]
    assert out.predictions[0].shape == (512, 512) and out.metrics["f1_skin"] > 0.3 and 0 < out.metrics["mean_f1"] <= 1


def test_lapa_layout_with_106_landmarks(tmp_path):
    from facerep_parsing.lapa import LAPA_CLASSES, LaPa, LaPaParams

    base = tmp_path / "train"
    for sub in ("images", "labels", "landmarks"):
        (base / sub).mkdir(parents=True)
    cv2.imwrite(str(base / "images" / "x.jpg"), np.zeros((16, 20, 3), np.uint8))
    mask = np.zeros((16, 20), np.uint8)
    mask[4:8, 4:8] = 10
    cv2.imwrite(str(base / "labels" / "x.png"), mask)
    (base / "landmarks" / "x.txt").write_text("106\n" + "".join(f"{i}.5 {i}\n" for i in range(106)))
    s = LaPa(LaPaParams(root=str(tmp_path)))[0]
    assert s.mask[5, 5] == 10 and s.landmarks.shape == (106, 2) and s.landmarks[3].tolist() == [3.5, 3.0]
    assert LaPa(LaPaParams(root=str(tmp_path))).info.class_names["mask"] == LAPA_CLASSES
    mask[0, 0] = 11
    cv2.imwrite(str(base / "labels" / "x.png"), mask)
    with pytest.raises(DataError, match=r"x.png: mask value\(s\) \[11\] outside the 11 classes"):
        LaPa(LaPaParams(root=str(tmp_path)))[0]
    (base / "landmarks" / "x.txt").write_text("106\n1 2\n")
    mask[0, 0] = 0
    cv2.imwrite(str(base / "labels" / "x.png"), mask)
    with pytest.raises(DataError, match=r"x.txt:1: says 106 points but 1 lines follow"):
        LaPa(LaPaParams(root=str(tmp_path)))[0]


def test_uperhead_builds_after_an_mmengine_runner_set_its_default_scope():
    from mmengine.registry import DefaultScope

    from facerep_parsing.heads import build_uperhead

    DefaultScope.get_instance("facerep-test-runner", scope_name="mmengine")  # what Runner(...) does
    head = build_uperhead([8, 8, 8, 8], 16, 3)
    out = head([torch.randn(2, 8, s, s) for s in (8, 4, 2, 1)])
    assert out.shape == (2, 3, 8, 8) and DefaultScope.get_current_instance().scope_name == "mmengine"


def _grid_sample_labels(logits: torch.Tensor, m: np.ndarray, h: int, w: int) -> np.ndarray:
    """The former predict, kept as the reference: torch's grid_sample at ``m @ (x, y, 1)``."""
    s = logits.shape[-1]
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    u = m[0, 0] * xs + m[0, 1] * ys + m[0, 2]
    v = m[1, 0] * xs + m[1, 1] * ys + m[1, 2]
    grid = torch.stack([(2 * u + 1) / s - 1, (2 * v + 1) / s - 1], -1)[None].float()
    back = torch.nn.functional.grid_sample(logits[None], grid, mode="bilinear", padding_mode="border", align_corners=False)[0]
    return back.argmax(0).to(torch.uint8).numpy()


def _smooth_logits(n: int, s: int, seed: int) -> torch.Tensor:
    """Class maps varying over the image (upsampled coarse noise), like a head's logits."""
    coarse = torch.from_numpy(np.random.default_rng(seed).standard_normal((1, n, 6, 6)).astype(np.float32))
    return torch.nn.functional.interpolate(coarse, size=(s, s), mode="bilinear", align_corners=False)[0]


def test_warp_argmax_matches_the_grid_sample_reference():
    from facerep_parsing.task import _matrix, warp_argmax

    s, h, w = 32, 150, 120
    logits = _smooth_logits(7, s, 0)
    # rotated, scaled, shifted: source positions off OpenCV's 1/32-pixel grid, edges replicated
    m = _matrix(h, w, s, rot=0.3, scale=1.15, shift=(0.03, -0.02))
    got, ref = warp_argmax(logits.numpy(), m, h, w), _grid_sample_labels(logits, m, h, w)
    assert got.shape == (h, w) and got.dtype == np.uint8
    assert len(np.unique(ref)) >= 4 and (got == ref).mean() >= 0.999
    # the test-time resize (512 -> 64: positions on multiples of 1/16 px, no ties): identical
    m = _matrix(512, 512, 64)
    logits = _smooth_logits(19, 64, 1)
    np.testing.assert_array_equal(warp_argmax(logits.numpy(), m, 512, 512), _grid_sample_labels(logits, m, 512, 512))


def test_warp_argmax_breaks_ties_towards_the_first_class_like_argmax():
    from facerep_parsing.task import warp_argmax

    logits = np.zeros((3, 8, 8), np.float32)
    logits[1:, :, 4:] = 1.0  # classes 1 and 2 tie on the right half; all three on the left
    labels = warp_argmax(logits, np.array([[1.0, 0, 0], [0, 1.0, 0]]), 8, 8)
    assert (labels[:, :4] == 0).all() and (labels[:, 5:] == 1).all()


def test_matrix_upsampling_equals_interpolate_in_values_and_gradients():
    from facerep_parsing.heads import upsample_bilinear

    torch.manual_seed(0)
    for shape, size in (((2, 3, 2, 2), 64), ((2, 3, 7, 5), 32), ((1, 2, 16, 16), 16)):
        x = torch.randn(shape, requires_grad=True)
        target = torch.randn(shape[0], shape[1], size, size)
        ref = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
        got = upsample_bilinear(x, size)
        torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)
        (g_ref,) = torch.autograd.grad((ref * target).sum(), x)
        (g_got,) = torch.autograd.grad((got * target).sum(), x)
        torch.testing.assert_close(g_got, g_ref, rtol=1e-5, atol=1e-5)
