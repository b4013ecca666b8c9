"""What a pretraining run shows on the terminal, and where the rest goes.

mmengine logs its environment, the hook table, its own deprecation notices and one INFO line per
log interval. All of that stays in mmengine's log file (``<work_dir>/<timestamp>/<timestamp>.log``);
with ``verbose=False`` the terminal gets only warnings (minus mmengine's deprecation chatter) and
one progress line from :class:`ProgressHook`:

    step   120/1000  loss 4.1230  z_std 0.0621  (mean of 10 steps)  512 img/s  elapsed 0:01:02  eta 0:08:31

:func:`visualizer_cfg` turns ``train.log_backends`` into an mmengine ``Visualizer`` config
(TensorBoard and/or Weights & Biases); the scalars come from mmengine's ``LoggerHook``.

Nothing here draws random numbers: resume stays bit-exact.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import re
import shutil
import sys
import time
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from mmengine.dist import get_rank, get_world_size
from mmengine.hooks import Hook
from mmengine.logging import MMLogger
from mmengine.runner import Runner

from facerep.errors import ConfigError

__all__ = ["COLLAPSE_KEYS", "LOG_BACKENDS", "ProgressHook", "quiet_terminal", "terminal_level", "visualizer_cfg"]

#: keys objectives log as a collapse signal (``LossOutput.logs``); the first ones present are shown
COLLAPSE_KEYS: tuple[str, ...] = ("z_std", "collapse")

#: accepted values of ``train.log_backends``
LOG_BACKENDS: tuple[str, ...] = ("tensorboard", "wandb")


# whether a progress line is open (written with a carriage return, no newline yet): a log record or
# warning that reaches the terminal first ends it, so it does not run into the line
_BAR = {"open": False}


def _end_bar_line() -> None:
    if _BAR["open"]:
        _BAR["open"] = False
        sys.stdout.write("\n")
        sys.stdout.flush()


def _hms(seconds: float) -> str:
    seconds = max(0, round(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class ProgressHook(Hook):
    """One progress line on rank 0: step, smoothed loss, collapse signal, images/s, elapsed, ETA.

    On a TTY the line is rewritten in place (carriage return) after every step; otherwise (CI,
    pipes, files) a plain line is printed every ``every`` steps and at the last step of the session.
    Values come from ``runner.message_hub`` (``train/loss``, ``train/<key>`` as written by
    mmengine's ``RuntimeInfoHook``; ``train/time`` and the ``eta`` info from ``IterTimerHook``),
    so the hook runs after them (priority ``LOW``).

    Args:
        every: steps between plain lines when stdout is not a TTY.
        window: steps the loss and the collapse signal are averaged over; default: the window of
            mmengine's log processor (10), which is what the log file and TensorBoard show too.
        collapse_keys: logged keys shown after the loss when the objective logs them.
        global_batch: images per step over all ranks; default: the train loader's ``batch_size``
            times the world size.
        bar: rewrite one line in place; default: whether stdout is a TTY. Pass ``False`` with
            ``--verbose`` so the line does not fight mmengine's INFO lines.
        show_log_file: print where mmengine's full log is written, before the first step.
    """

    priority = "LOW"

    def __init__(
        self,
        every: int = 10,
        *,
        window: int | None = None,
        collapse_keys: Sequence[str] = COLLAPSE_KEYS,
        global_batch: int | None = None,
        bar: bool | None = None,
        show_log_file: bool = True,
    ) -> None:
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        self.every = every
        self.window = window
        self.collapse_keys = tuple(collapse_keys)
        self.global_batch = global_batch
        self.bar = bar
        self.show_log_file = show_log_file
        self._t0 = 0.0
        self._width = 0
        self._last_printed = -1

    # -- hook points -------------------------------------------------------------------------

    def before_train(self, runner: Runner) -> None:
        self._t0 = time.perf_counter()
        self._width, self._last_printed = 0, -1
        if self.window is None:
            w = getattr(runner.log_processor, "window_size", 10)
            self.window = w if isinstance(w, int) and w > 0 else 10
        if self.global_batch is None:
            bs = getattr(getattr(runner.train_loop, "dataloader", None), "batch_size", None)
            self.global_batch = bs * get_world_size() if bs else 0
        if self.show_log_file and get_rank() == 0:
            log_file = getattr(runner.logger, "log_file", None)
            if log_file:
                self._write(f"full log: {log_file}\n")

    def after_train_iter(self, runner: Runner, batch_idx: int, data_batch: Any = None, outputs: Any = None) -> None:
        if get_rank() != 0:
            return
        step = runner.iter + 1  # the loop increments its counter after the hooks
        tty = self._tty()
        if tty or step % self.every == 0 or step >= runner.max_iters:
            self._show(runner, step, tty)

    def after_train(self, runner: Runner) -> None:
        if get_rank() != 0:
            return
        step = runner.iter  # after the loop: iterations done
        if _BAR["open"]:
            _end_bar_line()
        elif step != self._last_printed and step > 0 and "train/loss" in runner.message_hub.log_scalars:
            self._show(runner, step, tty=False)  # a session stopped between two plain lines

    # -- formatting --------------------------------------------------------------------------

    def line(self, runner: Runner, step: int) -> str:
        """The progress line for ``step`` (1-based, iterations done) from the message hub."""
        hub = runner.message_hub
        window = self.window or 10
        width = len(str(runner.max_iters))
        parts = [f"step {step:>{width}}/{runner.max_iters}"]
        values, n = [], 0
        for key in ("loss", *self.collapse_keys):
            buf = hub.log_scalars.get(f"train/{key}")
            if buf is not None:
                values.append(f"{key} {buf.mean(window):.4f}")
                n = max(n, min(window, len(buf.data[0])))
        if values:
            parts.append("  ".join(values) + f"  (mean of {n} steps)")
        times = hub.log_scalars.get("train/time")
        if times is not None:
            dt = float(times.mean(window))
            if dt > 0:
                parts.append(f"{self.global_batch / dt:,.0f} img/s" if self.global_batch else f"{1 / dt:.2f} it/s")
        parts.append(f"elapsed {_hms(time.perf_counter() - self._t0)}")
        eta = hub.get_info("eta")
        if eta is not None and step < runner.max_iters:
            parts.append(f"eta {_hms(float(eta))}")
        return "  ".join(parts)

    def _show(self, runner: Runner, step: int, tty: bool) -> None:
        text = self.line(runner, step)
        if tty:  # a line longer than the terminal wraps, and "\r" would only go back one row
            text = text[: max(20, shutil.get_terminal_size().columns - 1)]
            pad = max(0, self._width - len(text))
            self._width = len(text)
            self._write("\r" + text + " " * pad)
            _BAR["open"] = True
        else:
            _end_bar_line()
            self._write(text + "\n")
        self._last_printed = step

    def _tty(self) -> bool:
        if self.bar is not None:
            return self.bar
        isatty = getattr(sys.stdout, "isatty", None)
        return bool(isatty and isatty())

    @staticmethod
    def _write(text: str) -> None:
        sys.stdout.write(text)  # sys.stdout at call time: redirections and capture see it
        sys.stdout.flush()


# -- terminal level --------------------------------------------------------------------------

# mmengine's own WARNING-level notices that say nothing about the run: kept out of the terminal,
# still in the log file. Anything else mmengine warns about still reaches the terminal.
_MMENGINE_NOISE = re.compile(
    r"deprecat|is the alias of|has no metainfo|`self\.param_schedulers` is None|"
    r"should not accept any other arguments",
    re.IGNORECASE,
)
_MMENGINE_DIR = str(Path(importlib.util.find_spec("mmengine").origin).parent)  # type: ignore[union-attr, arg-type]
_QUIET_CATEGORIES = (DeprecationWarning, PendingDeprecationWarning, FutureWarning)
_QUIET_PACKAGES = ("mmengine", "torch", "torchvision", "timm")


class _TerminalFilter(logging.Filter):
    """Drops mmengine's notices (``_MMENGINE_NOISE``) and ends an open progress line first."""

    def filter(self, record: logging.LogRecord) -> bool:
        noise = record.levelno < logging.ERROR and record.pathname.startswith(_MMENGINE_DIR) and _MMENGINE_NOISE.search(record.getMessage())
        if noise:
            return False
        _end_bar_line()
        return True


def _terminal_handlers(logger: logging.Logger) -> list[logging.Handler]:
    # FileHandler is a StreamHandler too; the terminal handler is the plain one (stdout)
    return [h for h in logger.handlers if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)]


def terminal_level(logger: MMLogger | Runner, verbose: bool) -> None:
    """Sets the terminal handler of an MMLogger (or a runner's) to WARNING unless ``verbose``;
    file handlers keep their level. Ranks other than 0 stay at mmengine's ERROR."""
    if isinstance(logger, Runner):
        logger = logger.logger
    if verbose:
        return
    for h in _terminal_handlers(logger):
        h.setLevel(max(h.level, logging.WARNING))
        if not any(isinstance(f, _TerminalFilter) for f in h.filters):
            h.addFilter(_TerminalFilter())


def _is_quiet_warning(category: type[Warning], filename: str) -> bool:
    if issubclass(category, _QUIET_CATEGORIES):
        return True
    parts = Path(filename).parts
    return any(p in parts for p in _QUIET_PACKAGES) and ("site-packages" in parts or "dist-packages" in parts)


@contextlib.contextmanager
def quiet_terminal(verbose: bool = False) -> Iterator[None]:
    """Around building a :class:`~mmengine.runner.Runner` and training it: unless ``verbose``,
    mmengine's terminal handler shows WARNING and above only (the environment dump, the hook
    table and the INFO log lines go to the log file alone), and deprecation warnings, and any
    warning raised inside mmengine/torch/torchvision/timm, go to the log file instead of stderr.

    mmengine logs the environment inside ``Runner.__init__`` right after ``build_logger``, before
    any hook runs, so the context wraps ``Runner.build_logger`` (mmengine's override point) for
    its duration; the log file handler keeps ``log_level`` (INFO)."""
    if verbose:
        yield
        return

    built: list[MMLogger] = []
    pending: list[logging.LogRecord] = []
    original_build = Runner.build_logger
    previous_show = warnings.showwarning

    def to_file(record: logging.LogRecord) -> None:
        if not built:
            pending.append(record)
            return
        for h in built[-1].handlers:
            if isinstance(h, logging.FileHandler) and record.levelno >= h.level:
                h.handle(record)

    def build_logger(self: Runner, *args: Any, **kwargs: Any) -> MMLogger:
        logger = original_build(self, *args, **kwargs)
        terminal_level(logger, verbose=False)
        built.append(logger)
        while pending:  # warnings raised before the runner had a log file
            to_file(pending.pop(0))
        return logger

    def showwarning(message: Any, category: type[Warning], filename: str, lineno: int, file: Any = None, line: str | None = None) -> None:
        if not _is_quiet_warning(category, filename):
            _end_bar_line()
            previous_show(message, category, filename, lineno, file, line)
            return
        text = warnings.formatwarning(message, category, filename, lineno, line).rstrip()
        to_file(logging.LogRecord("py.warnings", logging.WARNING, filename, lineno, text, None, None))

    with warnings.catch_warnings():
        warnings.showwarning = showwarning
        Runner.build_logger = build_logger  # type: ignore[method-assign]
        try:
            yield
        finally:
            Runner.build_logger = original_build  # type: ignore[method-assign]
            warnings.showwarning = previous_show
            for record in pending:  # no runner log file came to be: do not lose them
                print(record.getMessage(), file=sys.stderr)


# -- visualisation backends ------------------------------------------------------------------


def _installed(package: str) -> bool:
    return importlib.util.find_spec(package) is not None  # finds, does not import


def visualizer_cfg(
    backends: Sequence[str], work_dir: str | Path, *, run_name: str | None = None, wandb_project: str = "facerep"
) -> dict | None:
    """mmengine ``visualizer`` config for ``train.log_backends``.

    ``()`` gives None: the Runner keeps its default, a Visualizer with ``LocalVisBackend``
    (``<work_dir>/<timestamp>/vis_data/scalars.json``). ``"tensorboard"`` adds a
    ``TensorboardVisBackend`` writing to ``<work_dir>/tensorboard`` (one directory for all the
    sessions of a resumed run), ``"wandb"`` a ``WandbVisBackend`` (``<work_dir>/wandb``; wandb is
    imported by mmengine on the first logged value, not here). The local backend is kept.
    """
    if isinstance(backends, str):
        backends = (backends,)
    unknown = [b for b in backends if b not in LOG_BACKENDS]
    if unknown:
        names = ", ".join(map(repr, unknown))
        raise ConfigError(f"train.log_backends: unknown backend(s) {names}; allowed: {', '.join(LOG_BACKENDS)} (or empty for none)")
    if not backends:
        return None
    work_dir = Path(work_dir)
    vis_backends: list[dict[str, Any]] = [dict(type="LocalVisBackend")]
    for name in dict.fromkeys(backends):  # keeps order, drops repeats
        if name == "tensorboard":
            if not (_installed("tensorboard") or _installed("tensorboardX")):
                raise ConfigError(
                    "train.log_backends: 'tensorboard' needs the tensorboard package: pip install 'facerep-core[tensorboard]'"
                )
            vis_backends.append(dict(type="TensorboardVisBackend", save_dir=str(work_dir / "tensorboard")))
        elif name == "wandb":
            if not _installed("wandb"):
                raise ConfigError("train.log_backends: 'wandb' needs the wandb package: pip install wandb")
            init_kwargs: dict[str, Any] = dict(project=wandb_project)
            if run_name:
                init_kwargs["name"] = run_name
            vis_backends.append(dict(type="WandbVisBackend", save_dir=str(work_dir / "wandb"), init_kwargs=init_kwargs))
    return dict(type="Visualizer", vis_backends=vis_backends)
