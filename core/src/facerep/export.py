"""``facerep export WORK_DIR OUT``: a pretrained backbone in the layout timm and the Hugging Face Hub use.

``OUT`` holds ``model.safetensors`` (the timm model's own state-dict keys), ``config.json`` (timm's
hub config: ``architecture``, ``num_features``, ``model_args`` and the ``pretrained_cfg`` with input
size, mean and std) and a ``README.md`` model card (method, data, budget, config, plugin versions,
evaluation rows with their 95 % intervals, licence). Without a network, timm builds it from the folder::

    cfg = json.load(open("OUT/config.json"))
    model = timm.create_model(cfg["architecture"], pretrained=True, num_classes=0, **cfg.get("model_args", {}),
                              pretrained_cfg_overlay=dict(file="OUT/model.safetensors"))

Modules a method keeps beside its backbone (``*.safetensors`` with a facerep sidecar other than the
backbone, e.g. FaRL's text tower) are copied under ``OUT/extras/`` with their sidecars. Nothing is
uploaded here; the card says how, with the hub's own client.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from facerep.errors import ConfigError, DataError

__all__ = ["export_timm"]

BACKBONE = "backbone.safetensors"


def _find_backbone(src: Path) -> Path:
    if src.is_file() and src.suffix == ".safetensors":
        return src
    if (src / BACKBONE).is_file():
        return src / BACKBONE
    raise DataError(f"{src}: no {BACKBONE} (export reads a finished pretraining work dir, or a backbone .safetensors file)")


def _input_size(work: Path, params: dict[str, Any], default: int) -> int:
    """The view size the backbone was trained at (the run's config), else its ``img_size``, else timm's."""
    cfg = _yaml(work / "config.yaml")
    obj = ((cfg.get("objective") or {}).get("params") or {}) if isinstance(cfg, dict) else {}
    for key in ("view_size", "global_size", "image_size", "size"):
        if isinstance(obj.get(key), int):
            return int(obj[key])
    return int(params.get("img_size") or default)


def _yaml(path: Path) -> Any:
    if not path.is_file():
        return {}
    import yaml

    try:
        return yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise DataError(f"{path}: not valid YAML ({exc})") from None


def _json(path: Path) -> Any:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON ({exc})") from None


def _evaluation_rows(work: Path) -> list[str]:
    """Summary rows (mean [95 % interval]) of evaluations stored in the work dir."""
    from facerep.eval.report import summary_rows

    results = _json(work / "results.json")
    if not isinstance(results, dict) or not results.get("results"):
        return []
    rows = ["| task | weights | protocol | fraction | metric | value [95 % interval] | seeds |", "|---|---|---|---|---|---|---|"]
    for s in summary_rows(results["results"], work):
        value = f"{s['mean']:.4f}" + (f" [{s['low']:.4f}, {s['high']:.4f}]" if s["low"] == s["low"] else "")
        rows.append(f"| {s['name']} | {s['weights']} | {s['protocol']} | {s['fraction']:g} | {s['metric']} | {value} | {s['seeds']} |")
    return rows


def _card(name: str, meta: dict[str, Any], config: dict[str, Any], cfg_text: str, plugins: Any, evals: list[str], licence: str,
          timm_cfg: dict[str, Any]) -> str:
    train = config.get("train") or {}
    data = config.get("data") or {}
    budget = ", ".join(f"{k} {train[k]}" for k in ("max_steps", "batch_size", "accumulate_steps", "precision") if k in train)
    versions = ""
    if isinstance(plugins, list):
        versions = "\n".join(f"- {p.get('name', '?')} {p.get('version', '?')}" for p in plugins if isinstance(p, dict))
    elif isinstance(plugins, dict):
        versions = "\n".join(f"- {k} {v if not isinstance(v, dict) else v.get('version', '?')}" for k, v in plugins.items())
    lines = [
        "---", "library_name: timm", f"license: {licence}", "tags: [image-feature-extraction, timm, facerep, faces]", "---", "",
        f"# {name}", "",
        f"A `{timm_cfg['architecture']}` face encoder pretrained without labels by facerep (method: `{meta.get('method', '?')}`).", "",
        "## Use", "", "```python", "import json, timm",
        'cfg = json.load(open("config.json"))',
        'model = timm.create_model(cfg["architecture"], pretrained=True, num_classes=0, **cfg.get("model_args", {}),',
        '                          pretrained_cfg_overlay=dict(file="model.safetensors"))',
        "```", "",
        f"Input: {timm_cfg['pretrained_cfg']['input_size'][1]} px RGB, mean {timm_cfg['pretrained_cfg']['mean']}, "
        f"std {timm_cfg['pretrained_cfg']['std']} (in [0, 1] units); {timm_cfg['num_features']} features.", "",
        "## Training", "",
        f"- method: `{meta.get('method', '?')}`",
        f"- data: `{data.get('name', '?')}` " + (f"({json.dumps(data.get('params'), default=str)})" if data.get("params") else ""),
        f"- budget: {budget or 'see the config'}", "",
        "Plugin versions:", "", versions or "- (not recorded)", "",
        "<details><summary>The run's config</summary>", "", "```yaml", cfg_text.rstrip(), "```", "", "</details>", "",
    ]
    if evals:
        lines += ["## Evaluation", "", *evals, "",
                  "Intervals count the few-shot subsets and the test items (facerep.eval.outcomes); see facerep's docs/bench.md.", ""]
    lines += ["## Upload", "", "With the hub's own client (`pip install huggingface_hub`, then `huggingface-cli login`):", "",
              "```python", "from huggingface_hub import upload_folder",
              'upload_folder(repo_id="YOUR_NAME/MODEL_NAME", folder_path=".", repo_type="model")', "```", ""]
    return "\n".join(lines)


def export_timm(src: str | Path, out: str | Path, *, licence: str = "other", overwrite: bool = False) -> Path:
    """Write ``out`` (see the module docstring) from a pretraining work dir or a backbone file."""
    import timm
    from safetensors.torch import load_file, save_file

    from facerep.checkpoint import read_sidecar

    src, out = Path(src), Path(out)
    weights = _find_backbone(src)
    work = weights.parent
    meta = read_sidecar(weights)
    backbone = meta.get("backbone") or {}
    if backbone.get("name") != "core.timm":
        raise ConfigError(f"{weights.with_suffix('.json')}: backbone {backbone.get('name')!r} is not a timm model (core.timm); "
                          "export writes timm's layout")
    params = dict(backbone.get("params") or {})
    arch = params.get("model", "resnet18")
    state = load_file(str(weights))
    timm_state = {k[len("model."):]: v for k, v in state.items() if k.startswith("model.")}
    if not timm_state or len(timm_state) != len(state):
        raise DataError(f"{weights}: keys are not those of facerep's timm backbone (expected every key under 'model.')")
    model_args = dict(params.get("model_kwargs") or {})
    for key in ("img_size", "patch_size", "drop_path_rate"):
        if params.get(key):
            model_args[key] = params[key]
    model = timm.create_model(arch, pretrained=False, num_classes=0, **model_args)
    missing = set(model.state_dict()) ^ set(timm_state)
    if missing:
        raise DataError(f"{weights}: does not fit timm's {arch} with {model_args} (keys differ: {sorted(missing)[:5]})")
    default_size = int(model.pretrained_cfg.get("input_size", (3, 224, 224))[-1])
    size = _input_size(work, params, default_size)
    pretrained_cfg = {**{k: v for k, v in model.pretrained_cfg.items() if k in ("interpolation", "first_conv", "classifier")},
                      "input_size": [3, size, size], "mean": list(params.get("mean", (0.485, 0.456, 0.406))),
                      "std": list(params.get("std", (0.229, 0.224, 0.225))), "crop_pct": 1.0, "crop_mode": "center",
                      "num_classes": 0}
    timm_cfg = {"architecture": arch, "num_classes": 0, "num_features": int(model.num_features), "pretrained_cfg": pretrained_cfg}
    if model_args:
        timm_cfg["model_args"] = model_args

    if out.exists() and any(out.iterdir()) and not overwrite:
        raise ConfigError(f"{out}: exists and is not empty (--overwrite replaces its files)")
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in timm_state.items()}, str(out / "model.safetensors"), metadata={"format": "pt"})
    (out / "config.json").write_text(json.dumps(timm_cfg, indent=2) + "\n")
    extras = [p for p in sorted(work.glob("*.safetensors")) if p != weights and p.with_suffix(".json").is_file()]
    for p in extras:
        (out / "extras").mkdir(exist_ok=True)
        shutil.copy2(p, out / "extras" / p.name)
        shutil.copy2(p.with_suffix(".json"), out / "extras" / p.with_suffix(".json").name)
    config = _yaml(work / "config.yaml")
    cfg_text = (work / "config.yaml").read_text() if (work / "config.yaml").is_file() else "# (no config.yaml beside the weights)\n"
    name = config.get("name", work.name) if isinstance(config, dict) else work.name
    card = _card(str(name), meta, config if isinstance(config, dict) else {}, cfg_text, _json(work / "plugins.json"),
                 _evaluation_rows(work), licence, timm_cfg)
    (out / "README.md").write_text(card)
    return out
