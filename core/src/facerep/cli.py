"""The ``facerep`` command.

``facerep list`` and ``facerep --help`` import no torch: plugins register import strings only.
Errors raised as :class:`~facerep.errors.FacerepError` are printed as one readable message with a
non-zero exit code (2 config, 3 data, 4 plugin, 5 unknown component).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from facerep import __version__
from facerep.describe import text_table
from facerep.errors import ConfigError, FacerepError, PluginError

__all__ = ["main"]


def cmd_list(args: argparse.Namespace) -> int:
    from facerep.plugins import get_plugins
    from facerep.registry import KINDS

    plugins = get_plugins()
    kinds = [args.kind] if args.kind else list(KINDS)
    for kind in kinds:
        specs = plugins.registry.specs(kind)
        print(f"\n{kind}s ({len(specs)})")
        if specs:
            print(text_table([(s.name, f"{s.dist} {s.version}", s.summary) for s in specs], ("name", "provided by", "summary")))
    if args.kind:  # just the one kind (scripts read this); the plugin table is in plain `facerep list`
        return 0
    print("\nplugins")
    rows = [(r.name, f"{r.dist} {r.version}", r.status, r.error or r.summary) for r in plugins.records]
    print(text_table(rows, ("plugin", "distribution", "status", "note")))
    return 0


def cmd_plugins_check(args: argparse.Namespace) -> int:
    from facerep.plugins import get_plugins

    plugins = get_plugins()
    failures = [f"plugin {r.name} ({r.dist} {r.version}): {r.status}: {r.error}" for r in plugins.problems]
    for spec in plugins.registry.specs():
        try:
            spec.load()
            spec.load_params()
        except PluginError as exc:  # already names the component, its distribution and the import string
            failures.append(str(exc))
        except Exception as exc:  # report every broken import string, not just the first
            failures.append(f"{spec.kind} {spec.name} ({spec.dist}): cannot import: {type(exc).__name__}: {exc}")
    loaded = {r.name for r in plugins.loaded}
    for name in args.expect or []:
        if name not in loaded:
            failures.append(f"expected plugin {name!r} is not loaded (loaded: {', '.join(sorted(loaded))})")
    n = len(plugins.registry.specs())
    if failures:
        print("\n".join(failures), file=sys.stderr)
        print(f"facerep plugins check: {len(failures)} problem(s); {len(loaded)} plugins, {n} components", file=sys.stderr)
        return 1
    print(f"facerep plugins check: ok: {len(loaded)} plugins ({', '.join(sorted(loaded))}), {n} components import cleanly")
    return 0


def cmd_plugins_new(args: argparse.Namespace) -> int:
    from facerep.scaffold import new_plugin

    dest = Path(args.dest or f"facerep-{args.name}")
    root = new_plugin(args.kind, args.name, dest, package=args.package)
    print(f"wrote {root}\nnext:\n  pip install -e {dest}\n  pytest {dest / 'tests'}\n  facerep run {args.name}/{args.name}_synthetic")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from facerep.describe import format_params
    from facerep.plugins import get_plugins
    from facerep.registry import KINDS

    plugins = get_plugins()
    found = []
    for kind in [args.kind] if args.kind else KINDS:
        try:
            found.append(plugins.get(kind, args.component))
        except KeyError as exc:
            last = exc
    if not found and args.kind:
        raise last  # the component-not-found message: close matches, installed plugins, skipped plugins
    if not found:
        import difflib

        from facerep.errors import ComponentNotFoundError

        names = [n for s in plugins.registry.specs() for n in (s.name, s.short_name)]
        close = ", ".join(dict.fromkeys(difflib.get_close_matches(args.component, names, n=5, cutoff=0.5)))
        raise ComponentNotFoundError(f"unknown component {args.component!r}" + (f"; did you mean: {close}?" if close else "")
                                     + " (see `facerep list`)")
    for spec in found:
        print(f"{spec.kind} {spec.name} ({spec.dist} {spec.version}): {spec.summary}")
        print(f"  target: {spec.target}")
        params = spec.load_params()
        print("\n" + (format_params(params) if params is not None else "no parameters"))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from facerep.config import find_config
    from facerep.run import run

    if args.stop_after is not None and args.stop_after < 1:
        raise ConfigError(f"--stop-after: must be a step >= 1, got {args.stop_after}")
    run(find_config(args.config), overrides=args.override or [], dry_run=args.dry_run, work_dir=args.work_dir,
        resume=args.resume, stop_after=args.stop_after, overwrite=args.overwrite, verbose=args.verbose, cost=not args.no_cost,
        gpu_tflops=args.gpu_tflops, gpu_util=args.gpu_util, processes=args.processes)
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from facerep.config import find_config
    from facerep.run import run

    run(find_config(args.config), overrides=args.override or [], dry_run=args.dry_run, work_dir=args.work_dir,
        evaluate_only=True, weights=args.weights, overwrite=args.overwrite, only=args.only or ())
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from facerep.bench import run_bench

    run_bench(args.suite, overrides=args.override or [], work_dir=args.work_dir, dry_run=args.dry_run)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from facerep.eval.report import merge_reports, render_report

    text = merge_reports(args.work_dir, args.merge, overwrite=args.overwrite) if args.merge else render_report(args.work_dir)
    print(text.split("\n## Every run")[0])
    return 0


def _datasets_of(args: argparse.Namespace) -> list[tuple[str, object]]:
    """(config path, dataset) pairs named by ``--dataset`` or by a config's data/evaluate blocks."""
    import yaml

    from facerep.build import build, resolve
    from facerep.config import ComponentConfig, apply_overrides, find_config, load_config

    if args.dataset:
        params = apply_overrides({}, args.param or [])
        return [("--dataset", build(resolve("dataset", ComponentConfig(args.dataset, params), "--dataset")))]
    if not args.config:
        raise ConfigError("facerep data check: give a CONFIG or --dataset NAME")
    cfg, _ = load_config(find_config(args.config), args.override or [])
    blocks = [("data", cfg.data)] if cfg.data is not None else []
    for i, ev in enumerate(cfg.evaluate):
        blocks += [(f"evaluate.{i}.{k}", getattr(ev, k)) for k in ("train", "val", "test") if getattr(ev, k) is not None]
    seen: dict[str, tuple[str, object]] = {}
    for path, comp in blocks:  # the same split named twice is checked once
        key = yaml.safe_dump({"name": comp.name, "params": comp.params}, sort_keys=True)
        if key not in seen:
            seen[key] = (path, build(resolve("dataset", comp, path)))
    return list(seen.values())


def cmd_data_check(args: argparse.Namespace) -> int:
    import json

    from facerep.data.check import check_dataset, cross_split_duplicates

    reports = []
    for path, ds in _datasets_of(args):
        rep = check_dataset(ds, limit=args.limit)
        rep["config_path"] = path
        reports.append(rep)
    cross = cross_split_duplicates(reports)
    rows = []
    for r in reports:
        res = f"{r['height'][0]}-{r['height'][2]} x {r['width'][0]}-{r['width'][2]}" if r["height"] else "-"
        labels = "; ".join(f"{f}: " + ", ".join(f"{k} {v}" for k, v in s.items() if k not in ("problem",)) for f, s in r["labels"].items())
        rows.append((r["config_path"], f"{r['name']}:{r['split']}", str(r["samples"]), str(r["unreadable"]), res,
                     f"{r['sharpness_mean']:.2f}", str(r["duplicates_within"]), labels or "none"))
    print(text_table(rows, ("config path", "dataset", "samples", "unreadable", "h x w", "sharpness", "dups", "labels")))
    problems = [f"{r['name']}:{r['split']}: {p}" for r in reports for p in r["problems"]] + cross
    warnings = [f"{r['name']}:{r['split']}: {w}" for r in reports for w in r["warnings"]]
    if warnings:
        print("\nwarnings:\n  " + "\n  ".join(warnings), file=sys.stderr)
    if args.strict:
        problems += warnings
    if args.json:
        for r in reports:
            r.pop("_hashes", None)
        with open(args.json, "w") as fh:
            json.dump({"splits": reports, "cross_split": cross}, fh, indent=2)
    if problems:
        print("\nproblems:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 1
    print("\nno problems found" + (" (see the warnings)" if warnings else ""))
    return 0


def cmd_import_weights(args: argparse.Namespace) -> int:
    import hashlib
    import json

    from facerep.build import build, resolve
    from facerep.checkpoint import export_backbone, import_state_dict, read_state_dict
    from facerep.config import ComponentConfig, apply_overrides

    comp = ComponentConfig(args.backbone, apply_overrides({}, args.param or []))
    module = build(resolve("backbone", comp, "--backbone"))
    src = Path(args.source)
    report = import_state_dict(module, read_state_dict(src, what="weights file"), source=src, prefix=args.prefix)
    digest = hashlib.sha256(src.read_bytes()).hexdigest()
    out = export_backbone(module, args.output, backbone=comp, method="imported",
                          extra={"imported_from": {"file": str(src.resolve()), "sha256": digest, **report}})
    print(f"{src}: {report['loaded']} tensors into {comp.name} (prefix {report['prefix']!r}); left out: "
          f"{', '.join(report['left_out'][:6]) or 'nothing'}{' ...' if len(report['left_out']) > 6 else ''}")
    print(f"wrote {out} and {out.with_suffix('.json').name}; evaluate it with: facerep eval CONFIG --weights {out}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from facerep.export import export_timm

    out = export_timm(args.work_dir, args.out, licence=args.license, overwrite=args.overwrite)
    print(f"wrote {out}/model.safetensors, config.json and README.md (timm / Hugging Face Hub layout); "
          f"load it with timm as the card's 'Use' section shows")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="facerep",
                                     description="Facial representation learning: pretrain face encoders and measure how they transfer.")
    parser.add_argument("--version", action="version", version=f"facerep {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("list", help="components by kind, with the distribution providing each")
    p.add_argument("--kind", choices=("dataset", "backbone", "objective", "head", "task", "protocol"))
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("plugins", help="plugin maintenance")
    psub = p.add_subparsers(dest="plugins_command", metavar="SUBCOMMAND", required=True)
    c = psub.add_parser("check", help="import every registered component; report broken plugins")
    c.add_argument("--expect", action="append", metavar="PLUGIN", help="fail unless this plugin is loaded (repeatable)")
    c.set_defaults(func=cmd_plugins_check)

    c = psub.add_parser("new", help="write a new plugin package from a template (installs, passes the contract suite, runs a preset)")
    c.add_argument("kind", choices=("objective",), help="what the plugin provides")
    c.add_argument("name", help="the plugin's name (entry point and namespace), e.g. barlow")
    c.add_argument("--dest", help="folder to create (default: ./facerep-NAME); must not exist or be empty")
    c.add_argument("--package", help="import package name (default: facerep_NAME)")
    c.set_defaults(func=cmd_plugins_new)

    p = sub.add_parser("show", help="a component's parameters: types, defaults and docs")
    p.add_argument("component", help="a component name, e.g. frl.swav or swav")
    p.add_argument("--kind", choices=("dataset", "backbone", "objective", "head", "task", "protocol"))
    p.set_defaults(func=cmd_show)

    p = sub.add_parser("run", help="run a config: pretraining and/or evaluation")
    p.add_argument("config", help="YAML file, or a preset '<plugin>/<name>' (see `facerep list`)")
    p.add_argument("-o", "--override", action="append", metavar="KEY=VALUE", help="override a config field, e.g. -o train.max_steps=10")
    p.add_argument("--dry-run", action="store_true",
                   help="resolve every component, print them and what the run will cost (parameters, FLOPs, memory, time), and stop")
    p.add_argument("--no-cost", action="store_true",
                   help="with --dry-run: skip the cost estimate (it builds the model and times a few steps)")
    p.add_argument("--gpu-tflops", type=float, metavar="T", help="with --dry-run: the GPU's dense peak for the time estimate "
                   "(default: an H100 SXM, 989 fp16/bf16, 67 fp32)")
    p.add_argument("--gpu-util", type=float, default=0.4, metavar="U", help="with --dry-run: the fraction of that peak reached (0.4)")
    p.add_argument("--processes", type=int, metavar="N",
                   help="with --dry-run: processes for the global figures (default: torchrun's, else 1)")
    p.add_argument("--work-dir", help="output folder (default: the config's work_dir or work_dirs/<name>)")
    p.add_argument("--resume", nargs="?", const=True, default=False, metavar="CHECKPOINT",
                   help="continue the work dir's run from its latest (or the given) checkpoint; the config must be the run's own")
    p.add_argument("--stop-after", type=int, metavar="STEP",
                   help="end this session after training step STEP (checkpointed); continue with --resume")
    p.add_argument("--overwrite", action="store_true", help="replace the run the work dir already holds (otherwise refused)")
    p.add_argument("--verbose", action="store_true", help="show mmengine's full log on the terminal (it is always in the work dir)")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("eval", help="evaluate exported weights (or random/pretrained per the config) on its evaluate grid")
    p.add_argument("config", help="YAML file with 'evaluate' entries, or a preset '<plugin>/<name>'")
    p.add_argument("--weights", metavar="BACKBONE", help="an exported backbone.safetensors (its JSON sidecar names the backbone)")
    p.add_argument("-o", "--override", action="append", metavar="KEY=VALUE", help="override a config field")
    p.add_argument("--dry-run", action="store_true", help="resolve every component, print them and stop")
    p.add_argument("--work-dir", help="output folder (default: the config's work_dir or work_dirs/<name>)")
    p.add_argument("--overwrite", action="store_true", help="replace the results the work dir already holds (otherwise refused)")
    p.add_argument("--only", nargs="+", metavar="ENTRY", help="run only the evaluate entries of these names (one job of a split grid; "
                   "'facerep report OUT --merge' joins the jobs)")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("import-weights",
                       help="turn a released state dict (torchvision, timm, FRL's module.base_net.) into a facerep backbone")
    p.add_argument("source", help="a .pth/.pt (read with weights_only: no pickled code runs) or .safetensors state dict")
    p.add_argument("--backbone", default="core.timm", help="the backbone component to build (default core.timm)")
    p.add_argument("-p", "--param", action="append", metavar="KEY=VALUE", help="a backbone parameter, e.g. -p model=resnet50")
    p.add_argument("--prefix",
                   help="the wrapper around the backbone's keys (default: the known one that fits: module.base_net., module., ...)")
    p.add_argument("-o", "--output", required=True, help="the backbone.safetensors to write (its JSON sidecar goes beside it)")
    p.add_argument("--json", help="also write what was loaded and left out to this file")
    p.set_defaults(func=cmd_import_weights)

    p = sub.add_parser("export", help="write a pretrained backbone in timm's / the Hugging Face Hub's layout, with a model card")
    p.add_argument("work_dir", help="a finished pretraining work dir (or its backbone.safetensors)")
    p.add_argument("out", help="the folder to write: model.safetensors, config.json, README.md")
    p.add_argument("--license", default="other", help="the card's licence field (default: other; the data's licence decides)")
    p.add_argument("--overwrite", action="store_true", help="replace the files of a non-empty OUT")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("bench", help="pretrain every method of a suite on one budget, evaluate all rows, write the leaderboard")
    p.add_argument("suite", help="a bench suite YAML (methods, budget, evaluate, baselines); see docs/bench.md")
    p.add_argument("-o", "--override", action="append", metavar="KEY=VALUE", help="override a suite field, e.g. -o budget.steps=50")
    p.add_argument("--work-dir", help="output folder (default: the suite's work_dir or work_dirs/bench/<name>)")
    p.add_argument("--dry-run", action="store_true", help="print the stages (and which are done) and stop")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("report", help="render results.md and the plots of an evaluation work dir again")
    p.add_argument("work_dir")
    p.add_argument("--merge", nargs="+", metavar="DIR", help="write one report into WORK_DIR from the results.json of these work dirs "
                   "(a grid split into jobs)")
    p.add_argument("--overwrite", action="store_true", help="with --merge: replace the results WORK_DIR already holds")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("data", help="dataset tools")
    dsub = p.add_subparsers(dest="data_command", metavar="SUBCOMMAND", required=True)
    c = dsub.add_parser("check", help="counts, label ranges, resolution, sharpness and duplicates per split")
    c.add_argument("config", nargs="?", help="a config: checks its data and every evaluate train/val/test split")
    c.add_argument("--dataset", help="check one registered dataset instead (params with -p key=value)")
    c.add_argument("-p", "--param", action="append", metavar="KEY=VALUE", help="dataset parameter (with --dataset)")
    c.add_argument("-o", "--override", action="append", metavar="KEY=VALUE", help="override a config field")
    c.add_argument("--limit", type=int, help="check only the first N samples of each split")
    c.add_argument("--json", metavar="FILE", help="also write the full report as JSON")
    c.add_argument("--strict", action="store_true", help="fail on warnings too (low sharpness, duplicates inside a split)")
    c.set_defaults(func=cmd_data_check)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] not in ("-h", "--help", "--version", "list", "plugins", "show", "run", "eval", "import-weights", "bench", "report",
                                            "data"):
        # only then are plugin commands needed (they would otherwise cost discovery on --help)
        from facerep.plugins import get_plugins

        get_plugins().manager.hook.facerep_add_commands(subparsers=parser._subparsers._group_actions[0])  # type: ignore[union-attr]
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 1
    try:
        return int(args.func(args) or 0)
    except FacerepError as exc:
        print(f"facerep: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("facerep: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
