"""pytest plugin for facerep plugin authors, auto-loaded through the ``pytest11`` entry point.

Fixtures:

- ``facerep_plugins``: a fresh plugin set discovered from the installed entry points, installed as
  the process-wide set for the test and forgotten afterwards.
- ``register_plugin``: ``register_plugin(name, module_or_object)`` returns a fresh plugin set with
  that object registered as an extra plugin (the datasette pattern), for the test only.
- ``tiny_faces``: 16 synthetic 64x64 faces with identity, 68 landmarks, mask, attributes,
  expression (``facerep.data.synthetic``; not real data); ``synthetic_faces``: 128 of 48x48 as a
  list, for short training runs; ``one_torch_thread``: torch on one thread for the test.

Contract suites (subclass them in your plugin's tests): :class:`facerep.testing.ObjectiveContract`.

Helpers: :func:`plugins_including` (a plugin's own fixture, installed or from source) and
:func:`run_in_gloo` (a function in N gloo processes, for "N processes give one process's result").

This module imports nothing heavy at import time: it is loaded by every pytest run in an
environment where facerep is installed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest


@pytest.fixture
def facerep_plugins() -> Iterator[Any]:
    from facerep.plugins import load_plugins, reset_plugins

    plugins = load_plugins()
    reset_plugins(plugins)
    yield plugins
    reset_plugins(None)


@pytest.fixture
def register_plugin() -> Iterator[Callable[[str, object], Any]]:
    from facerep.plugins import load_plugins, reset_plugins

    def _register(name: str, plugin: object) -> Any:
        plugins = load_plugins(extra=[(name, plugin)])
        reset_plugins(plugins)
        return plugins

    yield _register
    reset_plugins(None)


@pytest.fixture
def tiny_faces() -> Any:
    from facerep.data.synthetic import SyntheticFaces

    return SyntheticFaces(n=16, size=64, n_identities=4, seed=0)


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """torch on one thread for the test: small CPU models gain little from threads, and OpenMP
    threads spin (and crawl) on a busy machine."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def synthetic_faces() -> list[Any]:
    """128 synthetic 48x48 faces of 16 identities (with 68 landmarks), as a list: for short training runs."""
    from facerep.data.synthetic import SyntheticFaces

    ds = SyntheticFaces(n=128, size=48, n_identities=16, seed=0)
    return [ds[i] for i in range(len(ds))]


def plugins_including(name: str, module: Any) -> Iterator[Any]:
    """For a plugin's own ``conftest.py``: the installed plugin set when the distribution's entry
    point ``name`` is installed, else core + ``module`` registered as plugin ``name`` (a source
    checkout on ``PYTHONPATH``); installed process-wide for the test, forgotten afterwards::

        @pytest.fixture
        def mcf_plugins():
            import facerep_mcf.plugin
            yield from plugins_including("mcf", facerep_mcf.plugin)
    """
    import importlib.metadata as md

    from facerep.plugins import load_plugins, reset_plugins

    installed = any(ep.name == name for ep in md.entry_points(group="facerep"))
    plugins = load_plugins(strict=True) if installed else load_plugins(strict=True, extra=[(name, module)])
    reset_plugins(plugins)
    yield plugins
    reset_plugins(None)


def _gloo_entry(rank: int, world: int, init: str, out: str, fn: Callable[[int, int], dict]) -> None:
    import torch
    import torch.distributed as tdist

    tdist.init_process_group("gloo", init_method=f"file://{init}", rank=rank, world_size=world)
    try:
        torch.save(fn(rank, world), f"{out}/rank{rank}.pt")
    finally:
        tdist.destroy_process_group()


def run_in_gloo(fn: Callable[[int, int], dict], world: int, tmp_dir: Any) -> list[dict]:
    """Run ``fn(rank, world)`` in ``world`` CPU processes joined in a gloo process group and return
    what each returned (tensors and plain data, saved and read back with ``weights_only=True``).
    ``fn`` must be importable by name in a fresh process (a module-level function)."""
    import torch
    import torch.multiprocessing as mp

    mp.spawn(_gloo_entry, args=(world, f"{tmp_dir}/gloo_init", str(tmp_dir), fn), nprocs=world, join=True)
    return [torch.load(f"{tmp_dir}/rank{r}.pt", weights_only=True) for r in range(world)]
