"""Regenerate the field tables of docs/reference.md from the config classes' own docs.

    .venv/bin/python scripts/render_reference.py          # rewrite the tables in place
    .venv/bin/python scripts/render_reference.py --check  # exit 1 when they are out of date

Each table sits between ``<!-- fields: <dotted class path> -->`` and ``<!-- /fields -->``.
"""

from __future__ import annotations

import importlib
import re
import sys
from pathlib import Path

from facerep.describe import format_params

DOC = Path(__file__).resolve().parents[1] / "docs" / "reference.md"
BLOCK = re.compile(r"(<!-- fields: (?P<cls>[\w.]+) -->\n)(?P<body>.*?)(<!-- /fields -->)", re.S)


def _table(dotted: str) -> str:
    module, _, name = dotted.rpartition(".")
    skip = ("train", "evaluate") if name == "RunConfig" else ()  # documented in their own tables
    return "```text\n" + format_params(getattr(importlib.import_module(module), name), skip=skip).rstrip() + "\n```\n"


def render(text: str) -> str:
    return BLOCK.sub(lambda m: m.group(1) + _table(m.group("cls")) + m.group(4), text)


def main(argv: list[str]) -> int:
    text = DOC.read_text()
    new = render(text)
    if "--check" in argv:
        if new != text:
            print(f"{DOC} is out of date: run python scripts/render_reference.py", file=sys.stderr)
            return 1
        return 0
    DOC.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
