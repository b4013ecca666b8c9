"""Every paper preset for a few steps on a GPU, in fp16 and in bf16: finite losses, images/s, peak memory.

    python benchmarks/gpu_smoke.py --out gpu_smoke/            # 7 presets x {fp16, bf16}, 30 steps each
    python benchmarks/gpu_smoke.py --presets mcf/mcf_vit_b16_paper --precisions fp16 --steps 50

Each preset x precision runs in its own process (a clean CUDA context and an honest peak-memory
figure), through ``facerep.run.run`` with the preset's model, objective, optimizer, schedule,
clipping, micro-batching (``accumulate_steps``) and per-process batch, in one process
(``launcher: none``: SyncBN and DDP need the preset's GPU count). What is replaced, because the
presets' own data and teacher files are not on the machine:

- data: ``core.synthetic`` faces (256 px; 128 px for LAFS's 112 px crops), which carry the captions
  FaRL needs; LAFS reads the faces' own 68 points (``lafs.landmarked`` with ``source: file``);
- MCF's teacher: a randomly initialised ViT-B/16 (the official code's MoCo-v3 teacher is unreleased).

Per run it reports the loss at the first and last step (all finite, or the run fails), the
median images/s over the second half of the steps (compile and cuDNN autotuning excluded) and the
peak allocated GPU memory. ``--device cpu --steps 2 --batch 2`` checks the script itself on a CPU.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

PRESETS = ("frl/swav_r50_paper", "frl/moco_v2_r50_paper", "frl/moco_frl_r50_paper", "mcf/mcf_vit_b16_paper", "pros/pros_vit_b16_paper",
           "lafs/lafs_vit_b16_paper", "farl/farl_vit_b16_paper")


def _overrides(preset: str, precision: str, args: argparse.Namespace, tmp: Path) -> list[str]:
    from facerep.config import find_config, load_config

    _, raw = load_config(find_config(preset))
    train = raw.get("train", {})
    batch = args.batch or int(train.get("batch_size", 32))
    accumulate = args.accumulate or int(train.get("accumulate_steps", 1))
    size = 128 if preset.startswith("lafs/") else 256
    n = max(64, batch * accumulate * 2)
    synthetic = {"name": "core.synthetic", "params": {"n": n, "size": size, "n_identities": 32}}
    data: dict[str, Any] = synthetic
    if preset.startswith("lafs/"):
        points = tmp / "landmarks.npz"
        _write_synthetic_landmarks(points, n, size)
        data = {"name": "lafs.landmarked", "params": {"dataset": synthetic, "source": "file", "path": str(points),
                                                       "cache_dir": str(tmp / "cache")}}
    out = [f"data={json.dumps(data)}", f"train.max_steps={args.steps}", f"train.batch_size={batch}", f"train.accumulate_steps={accumulate}",
           f"train.precision={precision}", "train.launcher=none", "train.sync_bn=false", f"train.device={args.device}",
           "train.checkpoint_every=0", "train.log_every=1", f"train.num_workers={args.workers}", "evaluate=[]"]
    if args.compile:
        out.append("train.compile=true")
    if preset.startswith("mcf/"):
        out.append('objective.params.teacher={"model": "vit_base_patch16_224", "layers": [2, 5, 8, 11], "input_size": 224}')
    return out


def _write_synthetic_landmarks(path: Path, n: int, size: int) -> None:
    import numpy as np

    from facerep.data.synthetic import SyntheticParams, build_synthetic

    faces = build_synthetic(SyntheticParams(n=n, size=size, n_identities=32))
    np.savez(path, points=np.stack([faces[i].landmarks for i in range(len(faces))]).astype(np.float32))


def _one(preset: str, precision: str, args: argparse.Namespace) -> dict[str, Any]:
    """Runs in the child process: train, then read the per-step log mmengine wrote."""
    import torch

    from facerep.config import find_config, load_config
    from facerep.run import run

    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        t0 = time.perf_counter()
        overrides = _overrides(preset, precision, args, tmp)
        run(find_config(preset), overrides=overrides, work_dir=tmp / "wd", overwrite=True)
        wall = time.perf_counter() - t0
        rows = [json.loads(line) for f in (tmp / "wd").glob("*/vis_data/scalars.json") for line in f.read_text().splitlines()]
        cfg, _ = load_config(find_config(preset), overrides)
    rows = [r for r in rows if "loss" in r]
    losses = [float(r["loss"]) for r in rows]
    times = sorted(float(r["time"]) for r in rows[len(rows) // 2 :] if "time" in r)
    images = cfg.train.batch_size * cfg.train.accumulate_steps
    return {
        "preset": preset, "precision": precision, "steps": len(losses), "finite": all(math.isfinite(x) for x in losses),
        "loss_first": losses[0] if losses else None, "loss_last": losses[-1] if losses else None,
        "images_per_step": images,
        "first_step_s": float(rows[0]["time"]) if rows and "time" in rows[0] else None,  # with train.compile: the compile
        "images_per_s": images / times[len(times) // 2] if times else None,
        "peak_mem_gib": torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None, "wall_s": wall,
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--presets", nargs="*", default=list(PRESETS))
    ap.add_argument("--precisions", nargs="*", default=["fp16", "bf16"])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--batch", type=int, default=0, help="per-process batch (default: the preset's)")
    ap.add_argument("--accumulate", type=int, default=0, help="micro-batches per step (default: the preset's)")
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--compile", action="store_true", help="train.compile=true (the first steps then include compilation)")
    ap.add_argument("--child-timeout", type=float, default=0, help="seconds per preset x precision (0: none)")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--child", nargs=2, metavar=("PRESET", "PRECISION"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print("GPU_SMOKE " + json.dumps(_one(*args.child, args)), flush=True)
        return 0
    results = []
    for preset in args.presets:
        for precision in args.precisions:
            cmd = [sys.executable, __file__, "--child", preset, precision, "--steps", str(args.steps), "--batch", str(args.batch),
                   "--accumulate", str(args.accumulate), "--workers", str(args.workers), "--device", args.device]
            cmd += ["--compile"] if args.compile else []
            try:
                res = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=args.child_timeout or None)
                line = next((x for x in res.stdout.splitlines() if x.startswith("GPU_SMOKE ")), None)
                row = json.loads(line[len("GPU_SMOKE "):]) if line else {"preset": preset, "precision": precision,
                                                                          "error": (res.stderr or res.stdout)[-1500:]}
            except subprocess.TimeoutExpired:
                row = {"preset": preset, "precision": precision, "error": f"timed out after {args.child_timeout:.0f} s"}
            row["compile"] = args.compile
            results.append(row)
            print(_row(row), flush=True)
            if args.out:  # after every run: a run cut short by the caller's limit keeps what finished
                args.out.mkdir(parents=True, exist_ok=True)
                (args.out / "results.json").write_text(json.dumps(results, indent=2))
    header = "| preset | precision | steps | finite | loss first -> last | images/s | peak GiB |"
    table = "\n".join([header, "|---|---|---|---|---|---|---|",
                       *(_row(r) for r in results)])
    print(table)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "results.json").write_text(json.dumps(results, indent=2))
        (args.out / "results.md").write_text(table + "\n")
    return 0 if all(r.get("finite") for r in results) else 1


def _row(r: dict[str, Any]) -> str:
    if "error" in r:
        return f"| {r['preset']} | {r['precision']} | failed | | {r['error'].splitlines()[-1] if r['error'] else ''} | | |"
    ips = f"{r['images_per_s']:.0f}" if r["images_per_s"] else "-"
    mem = f"{r['peak_mem_gib']:.1f}" if r["peak_mem_gib"] is not None else "-"
    losses = f"{r['loss_first']:.4g} -> {r['loss_last']:.4g}" if r["steps"] else "-"
    return f"| {r['preset']} | {r['precision']} | {r['steps']} | {r['finite']} | {losses} | {ips} | {mem} |"


if __name__ == "__main__":
    sys.exit(main())
