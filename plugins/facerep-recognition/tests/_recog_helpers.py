"""Helpers of the facerep-recognition tests: where the real data is, and tiny LFW fixtures
written in the official file formats (imported by the test modules; conftest puts this folder on sys.path)."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[3]


def data_root() -> Path:
    """``$FACEREP_DATA`` or ``<repo>/../shared/data`` (as :func:`facerep.data.folder.expand_path`)."""
    env = os.environ.get("FACEREP_DATA")
    return Path(env) if env else (REPO / ".." / "shared" / "data").resolve()


def real_dir(name: str) -> Path:
    path = data_root() / name
    if not path.is_dir():
        pytest.skip(f"real data {path} is absent (set FACEREP_DATA or provide ../shared/data)")
    return path


def write_lfw(root: Path, pair_lines: list[str], *, file: str = "pairs.txt", people: dict[str, int] | None = None) -> Path:
    """An LFW folder: ``images/<Name>/<Name>_NNNN.jpg`` for every image the lines mention (or
    ``people``: name -> image count) and the pair list as given (header included)."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    wanted: set[tuple[str, int]] = set()
    for line in pair_lines[1:]:
        parts = line.split()
        if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
            wanted |= {(parts[0], int(parts[1])), (parts[0], int(parts[2]))}
        elif len(parts) == 4 and parts[1].isdigit() and parts[3].isdigit():
            wanted |= {(parts[0], int(parts[1])), (parts[2], int(parts[3]))}
    for name, count in (people or {}).items():
        wanted |= {(name, i) for i in range(1, count + 1)}
    for name, number in wanted:
        folder = root / "images" / name
        folder.mkdir(exist_ok=True)
        img = np.full((10, 10, 3), (number * 20) % 256, np.uint8)
        cv2.imwrite(str(folder / f"{name}_{number:04d}.jpg"), img)
    (root / file).write_text("\n".join(pair_lines) + "\n")
    return root
