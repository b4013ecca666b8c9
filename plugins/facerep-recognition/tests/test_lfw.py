"""LFW reader: View 1 / View 2 pair lists in the official format (tiny fixtures), their errors
(file and line), and exact counts on the real development copy."""

from __future__ import annotations

import numpy as np
import pytest
from _recog_helpers import real_dir, write_lfw

from facerep.data.subset import label_array
from facerep.errors import DataError
from facerep_recognition.lfw import LFW, LFWParams

VIEW1 = [
    "2",
    "Bob\t1\t2",
    "Ann\t1\t3",
    "Ann\t2\tBob\t1",
    "Cid_Zed\t1\tBob\t3",
]


def test_view1_unique_sorted_images_identities_pairs_and_folds(tmp_path):
    root = write_lfw(tmp_path, VIEW1, file="pairsDevTest.txt")
    ds = LFW(LFWParams(root=str(root), folds=2))
    # unique images, sorted by (name, number); identities index the sorted names
    assert [(s.split("/")[-1]) for s in map(str, ds.files)] == [
        "Ann_0001.jpg", "Ann_0002.jpg", "Ann_0003.jpg", "Bob_0001.jpg", "Bob_0002.jpg", "Bob_0003.jpg", "Cid_Zed_0001.jpg"]
    assert ds.identities.tolist() == [0, 0, 0, 1, 1, 1, 2]
    assert ds.info.class_names["identity"] == ("Ann", "Bob", "Cid_Zed")
    assert ds.pairs.tolist() == [[3, 4, 1], [0, 2, 1], [1, 3, 0], [6, 5, 0]]
    # 2 folds in file order within each block: same pairs 0|1, different pairs 0|1
    assert ds.folds.tolist() == [0, 1, 0, 1]
    assert ds.pair_lines.tolist() == [2, 3, 4, 5]
    s = ds[4]
    assert (s.identity, s.meta["name"], s.meta["number"], s.image.shape) == (1, "Bob", 2, (10, 10, 3))
    assert label_array(ds, "identity").tolist() == [0, 0, 0, 1, 1, 1, 2] and ds.label_array("attributes") is None


def test_view1_default_ten_folds_are_balanced_tenths(tmp_path):
    same = [f"P{i:02d}\t1\t2" for i in range(20)]
    diff = [f"P{i:02d}\t1\tP{i + 1:02d}\t2" for i in range(19)] + ["P19\t1\tP00\t2"]
    ds = LFW(LFWParams(root=str(write_lfw(tmp_path, ["20", *same, *diff])), pairs="pairs.txt"))
    assert ds.folds[:20].tolist() == [i // 2 for i in range(20)] and ds.folds[20:].tolist() == [i // 2 for i in range(20)]
    assert len(ds) == 40 and ds.pairs[:, 2].sum() == 20


def test_view2_keeps_the_official_folds(tmp_path):
    lines = ["2 1", "Ann 1 2", "Ann 1 Bob 1", "Bob 1 2", "Bob 2 Ann 2"]  # spaces are separators too
    ds = LFW(LFWParams(root=str(write_lfw(tmp_path, lines)), pairs="pairs.txt"))
    assert ds.folds.tolist() == [0, 0, 1, 1]
    assert ds.pairs[:, 2].tolist() == [1, 0, 1, 0]
    assert ds.pairs.tolist() == [[0, 1, 1], [0, 2, 0], [2, 3, 1], [3, 1, 0]]


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (["2 x", "Ann 1 2", "Ann 1 Bob 1"], r"pairs.txt:1: expected a header line 'N' \(View 1\) or 'folds N' \(View 2\)"),
        (["1", "Ann 1 Bob 1", "Ann 1 Bob 1"], r"pairs.txt:2: expected a 'same' pair 'Name i j' \(set 1, pair 1 of 1\), got 4 fields"),
        (["1", "Ann 1 2", "Ann 1 2"], r"pairs.txt:3: expected a 'different' pair 'Name1 i Name2 j' \(set 1, pair 1 of 1\), got 3 fields"),
        (["1", "Ann 1 two", "Ann 1 Bob 1"], r"pairs.txt:2: image number must be a positive integer, got 'two'"),
        (["1", "Ann 1 2", "", "Ann 0 Bob 1"], r"pairs.txt:4: image number must be a positive integer, got '0'"),
        (["2", "Ann 1 2", "Ann 1 3", "Ann 1 Bob 1"], r"pairs.txt: the header \(line 1\) announces 1 x \(2 same \+ 2 different\) = 4 pairs, "
                                                     r"but only 3 pair lines follow"),
        (["1", "Ann 1 2", "Ann 1 Bob 1", "Bob 1 2"], r"pairs.txt:4: unexpected line after the 2 pairs the header \(line 1\) announces"),
    ],
)
def test_malformed_pair_lists_name_file_and_line(tmp_path, lines, message):
    root = write_lfw(tmp_path, lines, people={"Ann": 3, "Bob": 2})
    with pytest.raises(DataError, match=message):
        LFW(LFWParams(root=str(root), pairs="pairs.txt"))


def test_missing_image_names_the_pair_line_or_is_skipped(tmp_path):
    root = write_lfw(tmp_path, ["2", "Ann 1 2", "Bob 1 2", "Ann 1 Bob 1", "Ann 2 Bob 2"])
    (root / "images" / "Bob" / "Bob_0002.jpg").unlink()
    with pytest.raises(DataError, match=r"pairs.txt:3: image .*Bob/Bob_0002.jpg not found"):
        LFW(LFWParams(root=str(root), pairs="pairs.txt"))
    ds = LFW(LFWParams(root=str(root), pairs="pairs.txt", on_error="skip"))
    assert [line for _, line, _ in ds.skipped] == [3, 5]
    assert ds.pair_lines.tolist() == [2, 4] and len(ds) == 3  # Ann 1, Ann 2, Bob 1


def test_missing_pair_list_is_named(tmp_path):
    (tmp_path / "images").mkdir()
    with pytest.raises(DataError, match=r"LFW pair list not found: .*pairsDevTest.txt"):
        LFW(LFWParams(root=str(tmp_path)))


def test_fit_pairs_add_their_images_and_index_into_the_union(tmp_path):
    write_lfw(tmp_path, ["1", "Ann 1 2", "Ann 1 Bob 1"], file="pairsDevTest.txt")
    write_lfw(tmp_path, ["1", "Cid 1 2", "Cid 1 Dee 1"], file="pairsDevTrain.txt")
    ds = LFW(LFWParams(root=str(tmp_path), fit_pairs="pairsDevTrain.txt", folds=1))
    assert len(ds) == 6 and ds.info.class_names["identity"] == ("Ann", "Bob", "Cid", "Dee")
    assert ds.pairs.tolist() == [[0, 1, 1], [0, 2, 0]] and ds.fit_pairs.tolist() == [[3, 4, 1], [3, 5, 0]]


@pytest.mark.realdata
def test_real_view1_lists_exact_counts():
    root = real_dir("lfw3d")
    train = LFW(LFWParams(root=str(root), pairs="pairsDevTrain.txt"))
    test = LFW(LFWParams(root=str(root)))
    assert (len(train.pairs), int(train.pairs[:, 2].sum())) == (2200, 1100)
    assert (len(test.pairs), int(test.pairs[:, 2].sum())) == (1000, 500)
    assert (len(train), len(test)) == (3443, 1549)  # unique images
    assert (len(train.info.class_names["identity"]), len(test.info.class_names["identity"])) == (2132, 963)
    assert np.bincount(train.folds).tolist() == [220] * 10 and np.bincount(test.folds).tolist() == [100] * 10
    assert all(int(test.pairs[test.folds == f, 2].sum()) == 50 for f in range(10))
    # pair structure: "same" pairs join two images of one person, "different" pairs two people
    ids = test.identities
    assert (ids[test.pairs[:, 0]] == ids[test.pairs[:, 1]]).tolist() == test.pairs[:, 2].astype(bool).tolist()
    first = test[0]
    assert first.meta["path"].endswith("AJ_Lamas/AJ_Lamas_0001.jpg") and first.image.shape == (90, 90, 3)
    both = LFW(LFWParams(root=str(root), fit_pairs="pairsDevTrain.txt"))
    assert len(both) == 3443 + 1549 and both.fit_pairs.shape == (2200, 3)  # View 1's people are disjoint
