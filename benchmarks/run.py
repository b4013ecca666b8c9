"""facerep vs lightly: speed as ratios measured in one run (``nox -s bench``).

    .venv/bin/python benchmarks/run.py --quick              # smoke pass, under a minute
    .venv/bin/python benchmarks/run.py --out bench_results/ # fuller pass (a few minutes), results.json + results.md

Every benchmark times facerep and lightly on the same computation, interleaved in this process,
and reports the median time of each and ``lightly / facerep`` (> 1: facerep is faster). Where
outputs can be compared they are, before timing, and the run fails if they disagree. Absolute
times depend on the machine and its load; only the ratios are meant to travel. These are
benchmarks, not tests: nothing asserts a speed.

Threads: compute benchmarks run with ``torch.set_num_threads(2)`` (this project's reference
machine has 2 cores); view generation runs with 1 torch and 1 OpenCV thread, the conditions of one
data-loader worker (PyTorch sets 1 thread in its workers).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import cv2  # noqa: E402
import torch  # noqa: E402

from _timing import Result  # noqa: E402

COMPUTE_THREADS = 2


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _versions() -> dict[str, str]:
    import lightly
    import numpy
    import PIL
    import timm
    import torchvision

    return {"python": platform.python_version(), "torch": torch.__version__, "torchvision": torchvision.__version__, "timm": timm.__version__,
            "lightly": lightly.__version__, "opencv": cv2.__version__, "pillow": PIL.__version__, "numpy": numpy.__version__}


def _set_threads(n: int) -> None:
    torch.set_num_threads(n)
    cv2.setNumThreads(n)


def benchmarks(quick: bool) -> list[tuple[str, Callable[[], list[Result]]]]:
    """(group name, thunk returning its rows), in run order."""
    import bench_losses
    import bench_train_step
    import bench_views

    # (warm-up, repetitions, samples per repetition) for view generation; (warm-up, repetitions) otherwise
    v_reps = (1, 5, 8) if quick else (2, 15, 32)
    l_reps = (2, 7) if quick else (5, 31)
    s_reps = (1, 3) if quick else (2, 9)

    def views() -> list[Result]:
        _set_threads(1)
        try:
            colour = bench_views.colour_agreement()
            w, r, p = v_reps
            rows = [bench_views.bench_multicrop(image_size=80, global_size=64, n_global=2, local_size=32, n_local=4, warmup=w, reps=r, per=p,
                                                colour_check=colour)]
            if not quick:
                rows.append(bench_views.bench_multicrop(image_size=256, global_size=224, n_global=2, local_size=96, n_local=6, warmup=w,
                                                        reps=r, per=max(4, p // 4), colour_check=colour))
            rows.append(bench_views.bench_two_views(image_size=72, size=64, warmup=w, reps=r, per=p, colour_check=colour))
            if not quick:
                rows.append(bench_views.bench_two_views(image_size=256, size=224, warmup=w, reps=r, per=max(4, p // 4), colour_check=colour))
            return rows
        finally:
            _set_threads(COMPUTE_THREADS)

    def losses() -> list[Result]:
        w, r = l_reps
        return [
            bench_losses.bench_sinkhorn(batch=256, n_protos=3000, warmup=w, reps=r),
            bench_losses.bench_swav_loss(batch=256, n_protos=3000, n_high=2, n_low=6, warmup=w, reps=r),
            bench_losses.bench_infonce(batch=256, queue_size=8192, dim=128, warmup=w, reps=r),
        ]

    def train_step() -> list[Result]:
        w, r = s_reps
        cfg = {"batch": 64, "global_size": 64, "n_global": 2, "local_size": 32, "n_local": 4, "n_protos": 300, "hidden_dim": 512, "out_dim": 128}
        setup = bench_train_step.SwAVStepSetup(**cfg)
        ours, theirs = setup.eval_losses()
        if abs(ours - theirs) > 1e-4 * max(1.0, abs(theirs)):
            raise AssertionError(f"SwAV step losses differ in eval mode: facerep {ours}, lightly-style {theirs}")
        check = f"eval-mode loss abs diff {abs(ours - theirs):.1e}"
        shape = "timm resnet18, batch 64, 2x64 + 4x32 crops, head 512-512-128, K=300"
        variants = [("fp32", False)] if quick else [("fp32", False), ("bf16", True), ("bf16", False)]
        return [bench_train_step.bench_swav_step(setup, label=f"SwAV step ({p} vs {'bf16' if lb else 'fp32'})", facerep_precision=p,
                                                 lightly_bf16=lb, warmup=w, reps=r, check=check, shape=shape) for p, lb in variants]

    return [("views", views), ("losses", losses), ("train step", train_step)]


def _fmt_time(seconds: float) -> str:
    ms = seconds * 1e3
    return f"{ms:.3g}" if ms < 100 else f"{ms:.0f}"


def markdown(results: list[Result], header: dict[str, str]) -> str:
    lines = [
        f"facerep vs lightly, {header['date']}: {header['machine']}; {header['mode']} pass; torch {header['torch']}, lightly {header['lightly']}.",
        f"Compute benchmarks: torch.set_num_threads({COMPUTE_THREADS}); view generation: 1 torch + 1 OpenCV thread (one loader worker).",
        "Times are medians of interleaved repetitions; ratio = lightly / facerep (> 1: facerep faster).",
        "",
        "| benchmark | unit | facerep | lightly | lightly / facerep | check |",
        "|---|---|---:|---:|---:|---|",
    ]
    for r in results:
        lines.append(f"| {r.name} | {r.unit} | {_fmt_time(r.facerep_s)} | {_fmt_time(r.lightly_s)} | {r.ratio:.2f} | {r.check} |")
    lines += ["", "Notes (what is compared, conditions):", ""]
    lines += [f"{i}. {r.note}" for i, r in enumerate(results, 1)]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smoke pass: fewer shapes and repetitions (< 1 min)")
    ap.add_argument("--out", type=Path, help="write results.json and results.md in this folder")
    ap.add_argument("--only", choices=["views", "losses", "train step"], action="append", help="run only these groups (repeatable)")
    args = ap.parse_args(argv)

    warnings.filterwarnings("ignore", category=UserWarning)  # torchvision v2 / lightly deprecation chatter
    warnings.filterwarnings("ignore", category=FutureWarning)
    _set_threads(COMPUTE_THREADS)
    torch.manual_seed(0)
    header = {
        "date": datetime.date.today().isoformat(),
        "machine": f"{os.cpu_count()}-core {platform.machine()} CPU ({_cpu_name()})",
        "mode": "quick" if args.quick else "full",
        **_versions(),
    }
    results: list[Result] = []
    t0 = time.perf_counter()
    for group, run in benchmarks(args.quick):
        if args.only and group not in args.only:
            continue
        g0 = time.perf_counter()
        rows = run()
        results += rows
        print(f"[{group}: {time.perf_counter() - g0:.1f} s]", file=sys.stderr)
    header["seconds"] = f"{time.perf_counter() - t0:.1f}"
    md = markdown(results, header)
    print(md)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "results.md").write_text(md)
        payload = {"header": header, "compute_threads": COMPUTE_THREADS, "results": [r.to_json() for r in results]}
        (args.out / "results.json").write_text(json.dumps(payload, indent=2) + "\n")
        print(f"wrote {args.out / 'results.json'} and {args.out / 'results.md'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
