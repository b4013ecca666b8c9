"""Images under folders: the unlabelled pretraining pool, or class sub-folders as labels
(``<root>/<class>/<image>``, the layout of FER2013's image export and of ImageNet-style sets).

Paths may use environment variables; ``$FACEREP_DATA`` defaults to ``../shared/data`` so that
configs run from the project root find the development data.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal

import attrs
import cv2
import numpy as np

from facerep.data.augment import decode_image
from facerep.errors import DataError
from facerep.types import DatasetInfo, Sample

__all__ = ["FolderRoot", "ImageFolder", "ImageFolderParams", "expand_path"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


def expand_path(path: str) -> Path:
    env = dict(os.environ)
    env.setdefault("FACEREP_DATA", "../shared/data")
    for key, value in env.items():
        path = path.replace(f"${{{key}}}", value)
    return Path(os.path.expandvars(os.path.expanduser(path)))


def resize_shorter_side(image: np.ndarray, size: int | None) -> np.ndarray:
    """``image`` with its shorter side ``size`` pixels (area when shrinking, linear when enlarging);
    unchanged when ``size`` is None or already met."""
    if size is None or min(image.shape[:2]) == size:
        return image
    h, w = image.shape[:2]
    scale = size / min(h, w)
    new = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(image, new, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)


@attrs.frozen
class FolderRoot:
    """One folder; ``start``/``stop`` slice its sorted file list (e.g. CelebA 000001-008000)."""

    path: str
    start: int = 0
    stop: int | None = None

    @classmethod
    def from_scalar(cls, value: object) -> FolderRoot:
        """A bare string in a config means ``{path: <string>}``."""
        if not isinstance(value, str):
            raise TypeError(f"expected a folder path or {{path, start, stop}}, got {value!r}")
        return cls(value)


@attrs.frozen
class ImageFolderParams:
    """Attributes:
    roots: folders (strings or ``{path, start, stop}``); files are found recursively and sorted.
    labels: ``none`` (unlabelled) or ``folder`` (the first sub-folder under the root is the class).
    label_field: the Sample field the class index goes to (``expression``, ``identity``, ...).
    class_names: class order; default: sorted sub-folder names.
    on_error: ``raise`` on an unreadable image (naming it) or ``skip`` it (counted, the next good
        image is returned instead).
    """

    roots: tuple[FolderRoot, ...]
    labels: Literal["none", "folder"] = "none"
    label_field: Literal["expression", "identity"] = "expression"
    class_names: tuple[str, ...] = ()
    extensions: tuple[str, ...] = IMAGE_EXTENSIONS
    name: str = "image_folder"
    split: str = "train"
    on_error: Literal["raise", "skip"] = "raise"
    #: Resize every image so that its shorter side is this many pixels, at decode time.
    resize: int | None = None
    #: Decode (and resize) every image once at construction and keep the uint8 arrays in memory;
    #: worth it for small pools that are read many times (pretraining), with ``resize`` set.
    preload: bool = False


class ImageFolder:
    """A :class:`~facerep.protocols.FaceDataset` over image files."""

    def __init__(self, params: ImageFolderParams) -> None:
        self.params = params
        self.files: list[Path] = []
        self.targets: list[int] = []
        classes: list[str] = list(params.class_names)
        exts = tuple(e.lower() for e in params.extensions)
        for root in params.roots:
            base = expand_path(root.path)
            if not base.is_dir():
                raise DataError(f"data folder not found: {base} (from {root.path!r})")
            files = sorted(p for p in base.rglob("*") if p.suffix.lower() in exts and p.is_file())
            files = files[root.start : root.stop]
            if params.labels == "folder":
                if not classes:
                    classes = sorted(d.name for d in base.iterdir() if d.is_dir())
                index = {c: i for i, c in enumerate(classes)}
                for f in files:
                    cls = f.relative_to(base).parts[0]
                    if cls not in index:
                        raise DataError(f"{f}: class folder {cls!r} is not one of {classes}")
                    self.targets.append(index[cls])
            self.files += files
        if not self.files:
            raise DataError(f"no images ({', '.join(exts)}) under {[r.path for r in params.roots]}")
        labels = (params.label_field,) if params.labels == "folder" else ()
        self.info = DatasetInfo(
            name=params.name, split=params.split, labels=labels, class_names={params.label_field: tuple(classes)} if labels else {}
        )
        self.skipped: set[str] = set()  # unreadable files met so far (on_error: skip)
        self._cache: list[np.ndarray | None] | None = None
        if params.preload:
            with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:  # cv2 releases the GIL
                self._cache = list(pool.map(self._decode_or_none, self.files))

    def _decode(self, path: Path) -> np.ndarray:
        return resize_shorter_side(decode_image(path), self.params.resize)

    def _decode_or_none(self, path: Path) -> np.ndarray | None:
        try:
            return self._decode(path)
        except DataError:
            if self.params.on_error == "raise":
                raise
            self.skipped.add(str(path))
            return None

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> Sample:
        for attempt in range(len(self.files)):
            i = (index + attempt) % len(self.files)
            path = self.files[i]
            if self._cache is not None:
                image = self._cache[i]
            else:
                image = self._decode_or_none(path)
            if image is None:
                continue
            sample = Sample(image=image, meta={"path": str(path), "index": i})
            if self.targets:
                setattr(sample, self.params.label_field, self.targets[i])
            return sample
        raise DataError(f"no readable image in {[r.path for r in self.params.roots]}")
