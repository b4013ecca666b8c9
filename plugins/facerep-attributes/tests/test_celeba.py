"""CelebA reader: the real development files (exact counts) and tiny fixtures in the real format."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from facerep.errors import DataError
from facerep_attributes.celeba import CelebA, CelebAParams

REAL = Path(__file__).resolve().parents[3] / ".." / "shared" / "data" / "celeba"


def _fixture(root: Path, rows: list[str], count: int | None = None) -> Path:
    (root / "img_align_celeba").mkdir(parents=True)
    names = " ".join(f"A{i}" for i in range(3))
    lines = [str(len(rows) if count is None else count), names + " ", *rows]
    (root / "list_attr_celeba.txt").write_text("\n".join(lines) + "\n")
    for row in rows:
        img = np.full((12, 10, 3), 7, np.uint8)
        cv2.imwrite(str(root / "img_align_celeba" / row.split()[0]), img)
    return root


def test_fixture_in_official_format_parses_to_zero_one_vectors(tmp_path):
    root = _fixture(tmp_path, ["000001.jpg -1  1  1", "000002.jpg  1 -1 -1", "000003.jpg  1  1 -1"])
    (root / "identity_CelebA.txt").write_text("000001.jpg 5\n000002.jpg 9\n000003.jpg 5\n")
    ds = CelebA(CelebAParams(root=str(root), start=2))
    assert len(ds) == 2
    s = ds[0]
    assert s.attributes.tolist() == [1, 0, 0] and s.identity == 9 and s.image.shape == (12, 10, 3)
    assert ds.info.class_names["attributes"] == ("A0", "A1", "A2")


@pytest.mark.parametrize(
    ("rows", "count", "message"),
    [
        (["000001.jpg -1 1"], None, r"list_attr_celeba.txt:3: expected a file name and 3 values, got 2"),
        (["000001.jpg -1 1 0"], None, r"list_attr_celeba.txt:3: attribute values must be 1 or -1, got \['0'\]"),
        (["000001.jpg -1 1 1"], 2, r"the count line says 2 images but 1 rows follow"),
    ],
)
def test_malformed_attribute_file_names_file_and_line(tmp_path, rows, count, message):
    root = _fixture(tmp_path, rows, count)
    with pytest.raises(DataError, match=message):
        CelebA(CelebAParams(root=str(root)))


def test_missing_image_is_named(tmp_path):
    root = _fixture(tmp_path, ["000001.jpg -1 1 1", "000002.jpg 1 1 1"])
    (root / "img_align_celeba" / "000002.jpg").unlink()
    with pytest.raises(DataError, match=r"000002.jpg"):
        CelebA(CelebAParams(root=str(root)))


@pytest.mark.skipif(not REAL.is_dir(), reason="../shared/data/celeba is absent")
def test_real_development_copy_counts_and_ranges():
    train = CelebA(CelebAParams(root=str(REAL), stop=8000))
    test = CelebA(CelebAParams(root=str(REAL), start=8001, split="test"))
    assert (len(train), len(test)) == (8000, 2000)
    assert train.attributes.shape == (8000, 40) and set(np.unique(train.attributes)) == {0, 1}
    assert len(set(train.identities) | set(test.identities)) == 5429
    s = test[0]
    assert s.meta["path"].endswith("008001.jpg") and s.image.shape == (109, 89, 3)
    # the share of "Male" (index 20) is a property of CelebA: about 42 %
    assert 0.35 < train.attributes[:, 20].mean() < 0.5


def test_aligned_landmark_file_is_read_and_rescaled_to_the_stored_images(tmp_path):
    import cv2

    from facerep_attributes.celeba import CelebA, CelebAParams

    (tmp_path / "img_align_celeba").mkdir()
    cv2.imwrite(str(tmp_path / "img_align_celeba" / "000001.jpg"), np.zeros((109, 89, 3), np.uint8))
    (tmp_path / "list_attr_celeba.txt").write_text("1\nSmiling Young\n000001.jpg  1 -1\n")
    (tmp_path / "list_landmarks_align_celeba.txt").write_text(
        "1\nlefteye_x lefteye_y righteye_x righteye_y nose_x nose_y leftmouth_x leftmouth_y rightmouth_x rightmouth_y\n"
        "000001.jpg    69  109  106  113   77  142   73  152  108  154\n")
    s = CelebA(CelebAParams(root=str(tmp_path)))[0]
    np.testing.assert_allclose(s.landmarks[0], [69 * 89 / 178, 109 * 109 / 218], rtol=1e-6)
    (tmp_path / "list_landmarks_align_celeba.txt").write_text("1\nheader\n000001.jpg 69 109\n")
    with pytest.raises(DataError, match=r"list_landmarks_align_celeba.txt:3: expected '<file>' and 10 integer coordinates"):
        CelebA(CelebAParams(root=str(tmp_path)))
