"""A run's work dir: created safely, locked while a run writes it, never silently overwritten.

Rules (``facerep run`` / ``facerep eval``):

- One run at a time: the run holds an exclusive ``flock`` on ``<work_dir>/.facerep.lock`` for its
  lifetime (released by the OS when the process ends, also on SIGKILL). A second run on the same
  work dir is refused, naming the holder's pid.
- A work dir that already holds a run (its ``config.yaml``, a checkpoint or an exported backbone) is
  refused unless the run resumes it (``--resume``) or replaces it on purpose (``--overwrite``).
- Checkpoints are found through ``last_checkpoint``, which names a file *in this work dir*; a copied
  or moved work dir resumes from its own files, never from the original's.
- Files are written atomically (temporary file, fsync, rename), so a crash at any moment leaves
  either the old file or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from facerep.errors import ConfigError, DataError, FacerepError

__all__ = [
    "CHECKPOINT_PATTERN",
    "WorkDirBusyError",
    "atomic_write",
    "atomic_write_text",
    "checkpoints",
    "config_differences",
    "holds_run",
    "latest_checkpoint",
    "lock_work_dir",
    "make_work_dir",
    "remove_run",
    "remove_temporary",
]

CHECKPOINT_PATTERN = re.compile(r"^iter_(\d+)\.pth$")
LOCK_FILE = ".facerep.lock"
LAST = "last_checkpoint"
#: Files a run writes; ``--overwrite`` removes exactly these (and checkpoints), nothing else.
RUN_FILES = ("config.yaml", "plugins.json", "environment.json", LAST, "backbone.safetensors", "backbone.json",
             "results.json", "results.jsonl", "results.md")
#: Config fields that may change between a run and its resume: they do not change what is trained.
RESUME_MAY_CHANGE = ("work_dir", "evaluate", "compare_random_init", "train.num_workers", "train.log_every", "train.log_backends",
                     "train.checkpoint_every", "train.keep_checkpoints")


class WorkDirBusyError(FacerepError):
    """Another process is writing this work dir."""

    exit_code = 6


def make_work_dir(path: Path) -> Path:
    """Create ``path`` (and parents); a clear error when a parent is a file or not writable."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        blocker = next((p for p in [path, *path.parents] if p.exists() and not p.is_dir()), path)
        raise ConfigError(f"work dir {path}: cannot create it, {blocker} is a file") from None
    except PermissionError as exc:
        raise ConfigError(f"work dir {path}: cannot create it: permission denied ({exc.filename})") from None
    if not path.is_dir():
        raise ConfigError(f"work dir {path}: exists and is not a directory")
    return path


_HELD: dict[str, IO[str]] = {}  # open lock files, by resolved path: held until the process exits


def lock_work_dir(path: Path) -> None:
    """Take the work dir's lock for the rest of this process (idempotent within a process)."""
    key = str(path.resolve())
    if key in _HELD:
        return
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: no locking, as before
        return
    fh = open(path / LOCK_FILE, "a+")
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.seek(0)
        holder = fh.read().strip() or "?"
        fh.close()
        raise WorkDirBusyError(
            f"work dir {path} is in use by another facerep run (pid {holder}); wait for it to end or use another --work-dir"
        ) from None
    fh.seek(0)
    fh.truncate()
    fh.write(str(os.getpid()))
    fh.flush()
    _HELD[key] = fh


def release_work_dir(path: Path) -> None:
    fh = _HELD.pop(str(path.resolve()), None)
    if fh is not None:
        fh.close()


def remove_temporary(path: Path) -> list[Path]:
    """Delete temporary files a killed run left half-written (call with the lock held)."""
    stale = [p for p in path.glob(".*.tmp-*") if p.is_file()]
    for p in stale:
        p.unlink()
    return stale


def checkpoints(path: Path) -> list[Path]:
    """Complete checkpoints in the work dir, oldest first (temporary files are never listed)."""
    found = [(int(m.group(1)), p) for p in path.glob("iter_*.pth") if (m := CHECKPOINT_PATTERN.match(p.name))]
    return [p for _, p in sorted(found)]


def holds_run(path: Path) -> list[str]:
    """What in ``path`` belongs to an earlier run (empty: nothing)."""
    if not path.is_dir():
        return []
    names = [n for n in ("config.yaml", "backbone.safetensors", "results.json", "results.jsonl") if (path / n).exists()]
    return names + [p.name for p in checkpoints(path)]


def remove_run(path: Path) -> None:
    """``--overwrite``: delete the files an earlier run wrote (and nothing the user put there)."""
    for p in checkpoints(path):
        p.unlink()
    for name in RUN_FILES:
        with contextlib.suppress(FileNotFoundError):
            (path / name).unlink()


def latest_checkpoint(path: Path) -> Path:
    """The checkpoint named by ``<path>/last_checkpoint``, resolved inside ``path``."""
    marker = path / LAST
    if not marker.is_file():
        raise ConfigError(f"--resume: no checkpoint to resume in {path} ({LAST} not found); run without --resume to start training")
    text = marker.read_text().strip()
    if not text:
        raise DataError(f"{marker}: empty; name a checkpoint explicitly with --resume {path}/iter_N.pth")
    # Only the file name counts: older facerep versions wrote absolute paths, and a work dir copied
    # elsewhere must resume from its own checkpoint, not from the original's.
    ckpt = path / Path(text).name
    if not ckpt.is_file():
        have = ", ".join(p.name for p in checkpoints(path)) or "none"
        raise DataError(f"{marker}: names {Path(text).name}, which is not in {path} (checkpoints there: {have})")
    return ckpt


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # not every filesystem supports fsync on a directory
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_write(path: Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success fsync it and rename it over ``path``.

    On an exception the temporary file is removed and ``path`` is untouched."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    _fsync_dir(path.parent)


def atomic_write_text(path: Path, text: str) -> None:
    with atomic_write(path) as tmp:
        tmp.write_text(text)


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for k, v in data.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out or {prefix: {}}
    if isinstance(data, list | tuple):
        if not data:
            return {prefix: []}
        out = {}
        for i, v in enumerate(data):
            out.update(_flatten(v, f"{prefix}.{i}"))
        return out
    return {prefix: data}


def config_differences(saved: dict[str, Any], new: dict[str, Any], may_change: tuple[str, ...] = RESUME_MAY_CHANGE) -> list[str]:
    """``path: saved -> new`` for every field that differs, except those under ``may_change``."""
    a, b = _flatten(saved), _flatten(new)
    allowed = lambda key: any(key == p or key.startswith(p + ".") for p in may_change)
    return [f"{k}: {a.get(k, '<absent>')!r} -> {b.get(k, '<absent>')!r}" for k in sorted(set(a) | set(b))
            if not allowed(k) and a.get(k, "<absent>") != b.get(k, "<absent>")]
