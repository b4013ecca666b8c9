"""LFW (Huang et al., "Labeled Faces in the Wild", UMass TR 07-49, 2007) pair lists over its image folders.

Images: ``<root>/<images>/<Name>/<Name>_<NNNN>.jpg`` (``NNNN`` the 1-based image number, 4 digits).

Pair lists, in the official formats:

* **View 1** (``pairsDevTrain.txt``, ``pairsDevTest.txt``): a first line ``N``, then ``N`` "same"
  lines ``Name i j`` and ``N`` "different" lines ``Name1 i Name2 j``.
* **View 2** (``pairs.txt``): a first line ``F N`` (``10 300``), then ``F`` folds, each ``N`` same
  lines followed by ``N`` different lines.

Fields are separated by tabs or spaces. The dataset yields every image the list refers to exactly
once, sorted by (name, number); ``identity`` is the index of the person's name among the sorted
names of those images. It carries:

* ``pairs``: ``(P, 3)`` int64 ``(index_a, index_b, same)`` into the dataset, in file order;
* ``folds``: ``(P,)`` fold ids: View 2's official folds; for View 1 (a single set),
  ``folds`` (10) folds assigned in file order within the same and the different block
  (:func:`~facerep_recognition.metrics.balanced_folds`: pairsDevTest's 500 + 500 give 10 folds
  of 50 + 50);
* ``pair_lines``: ``(P,)`` the 1-based line of each pair in the file;
* ``fit_pairs`` / ``fit_folds``: the same for an optional second list (``fit_pairs`` param, e.g.
  ``pairsDevTrain.txt``) whose images are added to the dataset, for the "threshold fitted on
  DevTrain, scored on DevTest" protocol; ``None`` without it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import attrs
import numpy as np

from facerep.data.augment import decode_image
from facerep.data.folder import expand_path
from facerep.data.io import read_text
from facerep.errors import DataError
from facerep.types import DatasetInfo, Sample
from facerep_recognition.metrics import balanced_folds

__all__ = ["LFW", "LFWParams", "PairList", "read_pair_list"]


def _positive(instance: object, attribute: attrs.Attribute, value: int) -> None:
    if value < 1:
        raise ValueError(f"{attribute.name} must be >= 1, got {value}")


@attrs.frozen
class LFWParams:
    """Attributes:
    root: folder holding the pair lists and the image folder.
    pairs: the pair list scored (relative to ``root``, or absolute).
    images: image sub-folder of ``root``.
    fit_pairs: an optional second pair list (e.g. ``pairsDevTrain.txt``) whose best threshold is
        also applied to ``pairs`` (``acc_fit`` of the verification task); its images are added.
    folds: folds assigned to a single-set (View 1) list; View 2 lists keep their own folds.
    on_error: ``raise`` on a pair whose image is missing (naming the pair file and line), or
        ``skip`` such pairs (their lines are kept in ``skipped``).
    """

    root: str = "${FACEREP_DATA}/lfw3d"
    pairs: str = "pairsDevTest.txt"
    images: str = "images"
    fit_pairs: str | None = None
    folds: int = attrs.field(default=10, validator=_positive)
    on_error: Literal["raise", "skip"] = "raise"
    name: str = "lfw"
    split: str = "test"

    @classmethod
    def tiny(cls) -> LFWParams:
        return cls()


@attrs.frozen
class PairList:
    """A parsed pair list: ``(name_a, number_a, name_b, number_b)`` per pair, ``same`` (P,) bool,
    ``folds`` (P,) int64 and the 1-based ``lines``."""

    path: Path
    entries: list[tuple[str, int, str, int]]
    same: np.ndarray
    folds: np.ndarray
    lines: np.ndarray
    n_sets: int


def _number(path: Path, no: int, text: str) -> int:
    if not text.isdecimal() or int(text) < 1:
        raise DataError(f"{path}:{no}: image number must be a positive integer, got {text!r}")
    return int(text)


def read_pair_list(path: Path, folds: int = 10) -> PairList:
    """Parse a View 1 (``N``) or View 2 (``F N``) LFW pair list. Errors name the file and line."""
    if not path.is_file():
        raise DataError(f"LFW pair list not found: {path}")
    lines = read_text(path).splitlines()
    numbered = [(no, line.split()) for no, line in enumerate(lines, start=1) if line.strip()]
    if not numbered:
        raise DataError(f"{path}: empty pair list")
    head_no, head = numbered[0]
    if len(head) not in (1, 2) or not all(h.isdecimal() for h in head):
        raise DataError(f"{path}:{head_no}: expected a header line 'N' (View 1) or 'folds N' (View 2), got {lines[head_no - 1][:60]!r}")
    n_sets, n = (1, int(head[0])) if len(head) == 1 else (int(head[0]), int(head[1]))
    if n_sets < 1 or n < 1:
        raise DataError(f"{path}:{head_no}: the header announces {n_sets} set(s) of {n} pairs; both must be >= 1")
    body = numbered[1:]
    expected = n_sets * 2 * n
    if len(body) < expected:
        raise DataError(f"{path}: the header (line {head_no}) announces {n_sets} x ({n} same + {n} different) = {expected} pairs, "
                        f"but only {len(body)} pair lines follow")
    if len(body) > expected:
        no = body[expected][0]
        raise DataError(f"{path}:{no}: unexpected line after the {expected} pairs the header (line {head_no}) announces")
    entries, same, fold_ids, line_nos = [], [], [], []
    for k, (no, parts) in enumerate(body):
        fold, within = divmod(k, 2 * n)
        is_same = within < n
        if is_same:
            if len(parts) != 3:
                raise DataError(f"{path}:{no}: expected a 'same' pair 'Name i j' (set {fold + 1}, pair {within + 1} of {n}), "
                                f"got {len(parts)} fields")
            entries.append((parts[0], _number(path, no, parts[1]), parts[0], _number(path, no, parts[2])))
        else:
            if len(parts) != 4:
                raise DataError(f"{path}:{no}: expected a 'different' pair 'Name1 i Name2 j' (set {fold + 1}, pair {within - n + 1} "
                                f"of {n}), got {len(parts)} fields")
            entries.append((parts[0], _number(path, no, parts[1]), parts[2], _number(path, no, parts[3])))
        same.append(is_same)
        fold_ids.append(fold)
        line_nos.append(no)
    same_arr = np.asarray(same, bool)
    fold_arr = np.asarray(fold_ids, np.int64) if n_sets > 1 else balanced_folds(same_arr, folds)
    return PairList(path, entries, same_arr, fold_arr, np.asarray(line_nos, np.int64), n_sets)


def image_path(images: Path, name: str, number: int) -> Path:
    return images / name / f"{name}_{number:04d}.jpg"


class LFW:
    """Every image of an LFW pair list once (sorted), with ``pairs`` and ``folds`` into them."""

    def __init__(self, params: LFWParams | None = None) -> None:
        self.params = p = params or LFWParams()
        root = expand_path(p.root)
        self.images_dir = root / p.images
        lists = [read_pair_list(self._resolve(root, p.pairs), p.folds)]
        if p.fit_pairs is not None:
            lists.append(read_pair_list(self._resolve(root, p.fit_pairs), p.folds))
        exists: dict[tuple[str, int], bool] = {}
        self.skipped: list[tuple[str, int, str]] = []  # (pair file, line, missing image)
        kept: list[np.ndarray] = []
        for plist in lists:
            keep = np.ones(len(plist.entries), bool)
            for i, (na, ia, nb, ib) in enumerate(plist.entries):
                for key in ((na, ia), (nb, ib)):
                    if key not in exists:
                        exists[key] = image_path(self.images_dir, *key).is_file()
                    if not exists[key]:
                        missing = image_path(self.images_dir, *key)
                        if p.on_error == "raise":
                            raise DataError(f"{plist.path}:{plist.lines[i]}: image {missing} not found")
                        self.skipped.append((str(plist.path), int(plist.lines[i]), str(missing)))
                        keep[i] = False
                        break
            kept.append(keep)
        keys = sorted({key for plist, keep in zip(lists, kept, strict=True)
                       for (na, ia, nb, ib), k in zip(plist.entries, keep, strict=True) if k for key in ((na, ia), (nb, ib))})
        self.keys: list[tuple[str, int]] = keys
        self.files = [image_path(self.images_dir, *key) for key in keys]
        names = sorted({name for name, _ in keys})
        name_index = {name: i for i, name in enumerate(names)}
        self.identities = np.asarray([name_index[name] for name, _ in keys], np.int64)
        index = {key: i for i, key in enumerate(keys)}

        def arrays(plist: PairList, keep: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            rows = [(index[(na, ia)], index[(nb, ib)], int(s))
                    for (na, ia, nb, ib), s, k in zip(plist.entries, plist.same, keep, strict=True) if k]
            return np.asarray(rows, np.int64).reshape(-1, 3), plist.folds[keep], plist.lines[keep]

        self.pairs, self.folds, self.pair_lines = arrays(lists[0], kept[0])
        self.fit_pairs = self.fit_folds = None
        if len(lists) > 1:
            self.fit_pairs, self.fit_folds, _ = arrays(lists[1], kept[1])
        self.pairs_file = lists[0].path
        self.info = DatasetInfo(name=p.name, split=p.split, labels=("identity",), class_names={"identity": tuple(names)})

    @staticmethod
    def _resolve(root: Path, name: str) -> Path:
        path = expand_path(name)
        return path if path.is_absolute() else root / path

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> Sample:
        path = self.files[index]
        name, number = self.keys[index]
        return Sample(image=decode_image(path), identity=int(self.identities[index]),
                      meta={"path": str(path), "name": name, "number": number})

    def label_array(self, field: str) -> np.ndarray | None:
        """``identity`` from the pair list alone (no image is decoded); None for other fields."""
        return self.identities.copy() if field == "identity" else None
