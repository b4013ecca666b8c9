"""facerep vs lightly: speed as ratios measured in one run (``nox -s bench``).

    .venv/bin/python benchmarks/run.py --quick              # smoke pass, well under a minute
    .venv/bin/python benchmarks/run.py --out bench_results/ # full pass (~1.5 min on 2 idle cores), results.json + results.md

Every benchmark times facerep and lightly on the same computation, interleaved in this process,
and reports the median time of each and ``lightly / facerep`` (> 1: facerep is faster). Where
outputs can be compared they are, before timing, and the run fails if they disagree. Absolute
times depend on the machine and its load; only the ratios are meant to travel. These are
benchmarks, not tests: nothing asserts a speed.

Threads: compute benchmarks run with ``torch.set_num_threads(2)`` (``--threads``; this project's reference
machine has 2 cores); view generation runs with 1 torch and 1 OpenCV thread, the conditions of one
data-loader worker (PyTorch sets 1 thread in its workers). ``--quick`` also sets
``OMP_WAIT_POLICY=PASSIVE`` (unless set), robust on a busy CPU; the full pass keeps OpenMP's
default, what training runs get (see benchmarks/README.md, "Load").
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

# stdlib and attrs only up to here: torch is imported in main(), once OMP_WAIT_POLICY is settled
from _timing import Result

DEFAULT_THREADS = 2
GROUPS = ("views", "losses", "train step", "bf16 curve")


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _versions() -> dict[str, str]:
    import cv2
    import lightly
    import numpy
    import PIL
    import timm
    import torch
    import torchvision

    return {
        "python": platform.python_version(), "torch": torch.__version__, "torchvision": torchvision.__version__, "timm": timm.__version__,
        "lightly": lightly.__version__, "opencv": cv2.__version__, "pillow": PIL.__version__, "numpy": numpy.__version__,
    }


def _load() -> str:
    """1-minute load average over the core count (other processes share the CPU)."""
    try:
        return f"{os.getloadavg()[0]:.2f} on {os.cpu_count()} cores"
    except OSError:
        return "n/a"


def _set_threads(n: int) -> None:
    import cv2
    import torch

    torch.set_num_threads(n)
    cv2.setNumThreads(n)


def bf16_is_timed() -> bool:
    """Whether the pass times bf16: only where the CPU has bf16 kernels (or ``FACEREP_CPU_BF16=emulated``).

    Elsewhere bf16 autocast is emulated (~16x slower than fp32 on an AVX2 host) and a preset asking
    for bf16 trains in fp32 (``facerep.engine.model.effective_precision``), so the preset's precision
    on that host *is* fp32: its rows would time a path no run takes, at 10-20 min of the pass."""
    from facerep.engine.model import CPU_BF16_ENV, cpu_bf16_is_native

    return cpu_bf16_is_native() or os.environ.get(CPU_BF16_ENV) == "emulated"


def benchmarks(quick: bool, threads: int) -> list[tuple[str, int, Callable[[], list[Result]]]]:
    """(group name, its torch threads, thunk returning its rows), in run order."""
    import bench_bf16_curve
    import bench_losses
    import bench_moco_step
    import bench_train_step
    import bench_views

    # (warm-up, repetitions, samples per repetition) for view generation; (warm-up, repetitions) otherwise
    v_reps = (1, 7, 8) if quick else (3, 21, 32)
    l_reps = (1, 5) if quick else (5, 41)
    s_reps = (1, 5) if quick else (2, 21)
    bf16 = bf16_is_timed()

    def keep(variants: list[tuple[str, str]]) -> list[tuple[str, str]]:
        return variants if bf16 else [(f, p) for f, p in variants if "bf16" not in f and p != "bf16"]

    def views() -> list[Result]:
        colour = bench_views.colour_agreement()
        w, r, p = v_reps
        rows = [bench_views.bench_multicrop(image_size=80, global_size=64, n_global=2, local_size=32, n_local=4, warmup=w, reps=r, per=p,
                                            colour_check=colour)]
        if not quick:
            rows.append(bench_views.bench_multicrop(image_size=256, global_size=224, n_global=2, local_size=96, n_local=6, warmup=w, reps=r,
                                                    per=max(4, p // 4), colour_check=colour))
        rows.append(bench_views.bench_two_views(image_size=72, size=64, warmup=w, reps=r, per=p, colour_check=colour))
        if not quick:
            rows.append(bench_views.bench_two_views(image_size=256, size=224, warmup=w, reps=r, per=max(4, p // 4), colour_check=colour))
        return rows

    def losses() -> list[Result]:
        w, r = l_reps
        shapes = [(256, 3000)] if quick else [(64, 300), (128, 1000), (256, 3000)]
        rows = [row for b, k in shapes for row in bench_losses.bench_sinkhorn(batch=b, n_protos=k, warmup=w, reps=r)]
        return [
            *rows,
            bench_losses.bench_swav_loss(batch=256, n_protos=3000, n_high=2, n_low=6, warmup=w, reps=r),
            bench_losses.bench_infonce(batch=256, queue_size=8192, dim=128, warmup=w, reps=r),
        ]

    def train_step() -> list[Result]:
        w, r = s_reps
        batch = 16 if quick else 64
        # "compiled": train.compile, its first step (the compile) in the check column; not in --quick (tens of seconds to compile)
        variants = [("fp32", "fp32")] if quick else keep([("fp32", "fp32"), ("fp32 NCHW", "fp32"), ("bf16", "bf16"), ("bf16", "fp32"),
                                                          ("fp32 compiled", "fp32"), ("bf16 compiled", "fp32")])
        setup = bench_train_step.SwAVStepSetup(
            batch=batch, global_size=64, n_global=2, local_size=32, n_local=4, n_protos=300, hidden_dim=512, out_dim=128,
            facerep_variants=tuple(v for v, _ in variants),
        )
        shape = f"timm resnet18, batch {batch}, 2x64 + 4x32 crops, projector 512-512-128, K=300"
        rows = bench_train_step.bench_swav_step(setup, variants=variants, warmup=w, reps=r, shape=shape)
        del setup
        # MoCo-v2 at the frl/moco_v2_tiny preset's shape (batch 128, two 64 px views, queue 8192; bf16 is its precision)
        batch = 16 if quick else 128
        variants = [("fp32", "fp32")] if quick else keep([("fp32", "fp32"), ("fp32 NCHW", "fp32"), ("bf16", "bf16"), ("bf16", "fp32"),
                                                          ("fp32 compiled", "fp32")])
        moco = bench_moco_step.MoCoStepSetup(batch=batch, size=64, queue_size=8192, hidden_dim=512, out_dim=128,
                                             facerep_variants=tuple(v for v, _ in variants))
        shape = f"timm resnet18, batch {batch}, 2x64 views, projector 512-512-128, queue 8192, T 0.2"
        return [*rows, *bench_moco_step.bench_moco_step(moco, variants=variants, warmup=w, reps=r, shape=shape)]

    def bf16_curve() -> list:
        # full: 200 steps of the step benchmark's configuration at batch 64; quick: 40 steps at batch 16
        batch, steps, window = (16, 40, 10) if quick else (64, 200, 20)
        return [bench_bf16_curve.bench_bf16_curve(batch=batch, steps=steps, window=window)]

    groups = [("views", 1, views), ("losses", threads, losses), ("train step", threads, train_step), ("bf16 curve", threads, bf16_curve)]
    return groups if bf16 else groups[:3]


def _fmt_time(seconds: float) -> str:
    ms = seconds * 1e3
    return f"{ms:.3g}" if ms < 100 else f"{ms:.0f}"


def markdown(results: list[Result], header: dict[str, str], checks: list | None = None) -> str:
    lines = [
        f"facerep vs lightly, {header['date']}: {header['machine']}; {header['mode']} pass; "
        f"torch {header['torch']}, lightly {header['lightly']}.",
        f"Compute benchmarks: torch.set_num_threads({header['threads']}), OMP_WAIT_POLICY={header['omp_wait_policy']}; "
        "view generation: 1 torch + 1 OpenCV thread (one loader worker). "
        f"Load average before / after: {header['load_before']} / {header['load_after']}; {header['seconds']} s.",
        f"bf16: {header['bf16']}.",
        "Times are medians of interleaved repetitions; ratio = lightly / facerep (> 1: facerep faster).",
        "",
        "| benchmark | unit | facerep | lightly | lightly / facerep | check |",
        "|---|---|---:|---:|---:|---|",
    ]
    for r in results:
        lines.append(f"| {r.name} | {r.unit} | {_fmt_time(r.facerep_s)} | {_fmt_time(r.lightly_s)} | {r.ratio:.2f} | {r.check} |")
    if checks:
        lines += [
            "",
            "Checks (not timings): bf16 autocast against fp32, same run, same seed, weights and batches.",
            "",
            "| check | mean abs diff of moving averages | fp32 step-to-step noise | diff <= noise | start fp32 / bf16 | end fp32 / bf16 "
            "| step time fp32 / bf16 |",
            "|---|---:|---:|---|---:|---:|---:|",
        ]
        lines += [c.markdown_row() for c in checks]
    lines += ["", "Notes (what is compared, conditions):", ""]
    lines += [f"{i}. {r.note}" for i, r in enumerate([*results, *(checks or [])], 1)]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smoke pass: fewer shapes, smaller train batch, fewer repetitions (< 1 min)")
    ap.add_argument("--out", type=Path, help="write results.json and results.md in this folder")
    ap.add_argument("--threads", type=int, default=DEFAULT_THREADS, help=f"torch threads of the compute benchmarks ({DEFAULT_THREADS})")
    ap.add_argument("--only", choices=GROUPS, action="append", help="run only this group (repeatable)")
    ap.add_argument("--passive-omp", action="store_true", help="OMP_WAIT_POLICY=PASSIVE (the default of --quick), for a shared CPU")
    args = ap.parse_args(argv)

    # Must happen before torch loads OpenMP. With the default policy an idle OpenMP thread spins;
    # on a CPU shared with another busy process it takes the core its peer needs, and 2-thread ops
    # then run up to ~10x slower than 1-thread ones (seen on the 2-core reference machine while a
    # training ran). PASSIVE threads sleep: robust under load, but slower on an idle machine (a
    # wake-up per parallel region), so the full pass keeps the default that training runs get.
    if "OMP_WAIT_POLICY" not in os.environ and (args.quick or args.passive_omp):
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    import torch

    warnings.filterwarnings("ignore", category=UserWarning)  # torchvision v2 / lightly deprecation chatter
    warnings.filterwarnings("ignore", category=FutureWarning)
    torch.manual_seed(0)
    header = {
        "date": datetime.date.today().isoformat(),
        "machine": f"{os.cpu_count()}-core {platform.machine()} CPU ({_cpu_name()})",
        "mode": "quick" if args.quick else "full",
        "threads": str(args.threads),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY") or "default",
        "load_before": _load(),
        "bf16": "timed" if bf16_is_timed() else
                "not timed: this CPU has no bf16 kernels, so bf16 presets train in fp32 here (FACEREP_CPU_BF16=emulated times it anyway)",
        **_versions(),
    }
    results: list[Result] = []
    checks: list = []  # bench_bf16_curve.CurveCheck rows
    t0 = time.perf_counter()
    for group, threads, run in benchmarks(args.quick, args.threads):
        if args.only and group not in args.only:
            continue
        _set_threads(threads)
        g0 = time.perf_counter()
        rows = run()
        for r in rows:
            r.note += f"; {threads} thread{'s' if threads > 1 else ''}"
        results += [r for r in rows if isinstance(r, Result)]
        checks += [r for r in rows if not isinstance(r, Result)]
        print(f"[{group}: {time.perf_counter() - g0:.1f} s]", file=sys.stderr)
    header["seconds"] = f"{time.perf_counter() - t0:.1f}"
    header["load_after"] = _load()
    md = markdown(results, header, checks)
    print(md)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "results.md").write_text(md)
        payload = {"header": header, "results": [r.to_json() for r in results], "checks": [c.to_json() for c in checks]}
        (args.out / "results.json").write_text(json.dumps(payload, indent=2) + "\n")
        print(f"wrote {args.out / 'results.json'} and {args.out / 'results.md'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
