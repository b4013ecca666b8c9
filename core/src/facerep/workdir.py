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
- ``--overwrite`` moves the earlier run's files aside into ``<work_dir>/.previous-<time>/`` when the
  new run starts, and deletes them only once the new run has a checkpoint (``last_checkpoint``) or
  has finished; a new run that fails before that puts them back. A run killed in between (SIGKILL,
  power loss) leaves the folder: the next ``facerep`` run on the work dir finishes the job (puts the
  files back, or deletes them if the killed run did write a checkpoint) before anything else.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import time
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
    "remove_temporary",
    "restore_previous",
    "set_aside_run",
    "settle_previous",
]

CHECKPOINT_PATTERN = re.compile(r"^iter_(\d+)\.pth$")
LOCK_FILE = ".facerep.lock"
LAST = "last_checkpoint"
#: Files a run writes; ``--overwrite`` replaces exactly these (and checkpoints), nothing else.
RUN_FILES = ("config.yaml", "plugins.json", "environment.json", "objective.json", LAST, "backbone.safetensors", "backbone.json",
             "results.json", "results.jsonl", "results.md")
#: ``--overwrite`` keeps the replaced run's files in ``.previous-<time>/`` until the new run has a checkpoint.
PREVIOUS_PREFIX = ".previous-"
#: In a ``.previous-*`` folder: the names moved there (written before the first move).
MOVED = "moved.json"
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


def _run_files(path: Path) -> list[str]:
    return [p.name for p in checkpoints(path)] + [n for n in RUN_FILES if (path / n).exists()]


def set_aside_run(path: Path) -> Path | None:
    """``--overwrite`` as the new run starts: move the earlier run's files into a new
    ``<path>/.previous-<time>/`` (call with the lock held); None when there was nothing to move.

    The names are recorded in the folder (``moved.json``) before the first move, so that a run
    killed halfway can be undone by :func:`settle_previous`."""
    names = _run_files(path)
    if not names:
        return None
    aside = path / f"{PREVIOUS_PREFIX}{time.strftime('%Y%m%d_%H%M%S')}"
    while aside.exists():  # two overwrites within a second (tests)
        aside = aside.with_name(aside.name + "_")
    aside.mkdir()
    atomic_write_text(aside / MOVED, json.dumps(names))
    for name in names:
        os.replace(path / name, aside / name)  # same file system: a rename, no copy
    _fsync_dir(path)
    return aside


def _moved(aside: Path) -> list[str] | None:
    try:
        names = json.loads((aside / MOVED).read_text())
    except (OSError, ValueError):
        return None
    return names if isinstance(names, list) and all(isinstance(n, str) and "/" not in n for n in names) else None


def _new_run_has_checkpoint(path: Path, aside: Path, names: list[str]) -> bool:
    """Whether the run that replaced ``aside``'s has a checkpoint of its own: a ``last_checkpoint``
    in the work dir that is not the earlier run's (still in ``aside``, or never there). Restoring
    moves ``last_checkpoint`` back last, so a restore cut short never reads as a new checkpoint."""
    return (path / LAST).is_file() and (LAST not in names or (aside / LAST).exists())


def restore_previous(path: Path, aside: Path) -> None:
    """Put the earlier run's files back from ``aside`` (the new run ended before its first
    checkpoint): the new run's record files go, the earlier run's return, ``aside`` is removed.
    Safe to repeat after a crash halfway."""
    names = _moved(aside) or []
    keep = set(names)
    for name in _run_files(path):  # the new run's files: a record and no checkpoint
        if name not in keep:
            (path / name).unlink()
    for name in sorted(names, key=lambda n: n == LAST):  # last_checkpoint last: see _new_run_has_checkpoint
        if (aside / name).exists():
            os.replace(aside / name, path / name)
    _fsync_dir(path)
    shutil.rmtree(aside)


def previous_runs(path: Path) -> list[Path]:
    """The ``.previous-*`` folders of ``--overwrite`` runs that have not settled yet."""
    return sorted(p for p in path.glob(PREVIOUS_PREFIX + "*") if p.is_dir())


def settle_previous(path: Path, aside: Path | None = None, *, finished: bool = False) -> list[str]:
    """Finish what an ``--overwrite`` run left: delete the earlier run's files once the new run has
    finished or has a checkpoint, otherwise put them back. ``aside``: that run's folder (default:
    every ``.previous-*`` folder, as a killed run left them). Returns one line per folder, saying
    what was done (call with the lock held)."""
    done = []
    for folder in [aside] if aside is not None else previous_runs(path):
        names = _moved(folder)
        if names is None:  # killed before it recorded (and so moved) anything
            if all(p.name.startswith(f".{MOVED}.tmp-") for p in folder.iterdir()):
                shutil.rmtree(folder)
            else:
                done.append(f"{folder}: left as it is ({MOVED} missing or unreadable); move its files back by hand or delete it")
            continue
        if finished or _new_run_has_checkpoint(path, folder, names):
            shutil.rmtree(folder)
            done.append(f"deleted {folder}, the run that --overwrite replaced: the new run has "
                        + ("finished" if finished else "a checkpoint"))
        else:
            restore_previous(path, folder)
            done.append(f"restored the run that --overwrite was to replace from {folder} (the new run ended before its first checkpoint)")
    return done


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
