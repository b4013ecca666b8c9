"""Developer sessions. `nox -l` lists them.

- tests:       the full suite in one environment (what CI runs)
- core:        core alone, no plugin installed
- plugin:      each plugin alone with core, in its own venv (proves no hidden cross-plugin deps)
- lint:        ruff
- bench:       speed and quality benchmarks (ratios against a peer library, lightly, in one run)
"""

from __future__ import annotations

from pathlib import Path

import nox

ROOT = Path(__file__).parent
PLUGINS = sorted(p.name for p in (ROOT / "plugins").iterdir() if (p / "pyproject.toml").is_file())
TORCH = ["torch==2.14.1", "torchvision==0.29.1"]
#: Optional extras the plugins' own tests exercise (binary wheels only), as in scripts/setup.sh.
EXTRAS = {"facerep-pros": "[detect]", "facerep-lafs": "[dlib]"}
nox.options.sessions = ["tests"]
nox.options.reuse_existing_virtualenvs = True


def _install(session: nox.Session, *packages: str) -> None:
    session.install("-c", "constraints.txt", *TORCH)
    session.install("-c", "constraints.txt", "pytest", *packages)


def _install_all(session: nox.Session) -> None:
    packages = ["core[tensorboard]", *(f"plugins/{n}{EXTRAS.get(n, '')}" for n in PLUGINS),
                "integration_tests/plugins/facerep-example-objective"]
    _install(session, *(f"-e{p}" for p in packages))


@nox.session(python="3.11")
def tests(session: nox.Session) -> None:
    _install_all(session)
    session.run("pytest", *session.posargs)


@nox.session(python="3.11")
def slow(session: nox.Session) -> None:
    """The slow tier the default run deselects (``-m slow``): about 2 minutes more on 2 cores."""
    _install_all(session)
    session.run("pytest", "-m", "slow", *session.posargs)


@nox.session(python="3.11")
def core(session: nox.Session) -> None:
    _install(session, "-ecore")
    session.run("pytest", "core/tests", *session.posargs)


def _local_deps(plugin: str) -> list[str]:
    """The repository's plugins that ``plugin`` declares as dependencies (e.g. facerep-lafs needs
    facerep-landmarks): installed from here, as no index has them. Declared, so not hidden."""
    import tomllib

    deps = tomllib.loads((ROOT / "plugins" / plugin / "pyproject.toml").read_text())["project"].get("dependencies", [])
    names = {d.split(">")[0].split("=")[0].split("<")[0].split("[")[0].strip() for d in deps}
    return [f"-eplugins/{n}" for n in sorted(names) if n != plugin and (ROOT / "plugins" / n / "pyproject.toml").is_file()]


@nox.session(python="3.11")
@nox.parametrize("plugin", PLUGINS)
def plugin(session: nox.Session, plugin: str) -> None:
    _install(session, "-ecore", *_local_deps(plugin), f"-eplugins/{plugin}{EXTRAS.get(plugin, '')}")
    short = plugin.removeprefix("facerep-").replace("-", "_")
    session.run("facerep", "plugins", "check", "--expect", short)  # entry-point name = dist name minus "facerep-"
    session.run("pytest", f"plugins/{plugin}/tests", *session.posargs)


@nox.session(python="3.11")
def lint(session: nox.Session) -> None:
    session.install("ruff==0.14.0")
    session.run("ruff", "check", "core", "plugins", "integration_tests", "benchmarks", "scripts", "noxfile.py")


@nox.session(python="3.11")
def bench(session: nox.Session) -> None:
    extras = [f"-e{p}" for p in ["core", *(f"plugins/{n}" for n in PLUGINS)]]
    # the peers, pinned so ratios stay comparable: lightly for the SSL steps, scikit-learn for the probes
    _install(session, *extras, "lightly==1.6.0", "scikit-learn==1.9.1")
    session.run("python", "benchmarks/run.py", *session.posargs)
