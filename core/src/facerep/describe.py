"""Human-readable descriptions of params classes: the fields a component takes and the values a
config resolved to (backs ``facerep show COMPONENT`` and ``--dry-run``), and the plain-text tables the commands print.

A field's doc comes from, in this order:

* ``#:`` comment lines right above the field (Sphinx style), or a ``#:`` comment after it on the
  same line;
* its entry in an ``Attributes:`` section of the class docstring (Google style; ``a / b: ...``
  documents both fields; continuation lines are indented deeper);
* a plain ``# ...`` comment after the field on its line (``batch_size: int = 32  # per process``).

Nested attrs classes are described field by field under dotted names (``optimizer.lr``); a tuple of
attrs classes under ``name[].field``. Nothing here imports torch.
"""

from __future__ import annotations

import ast
import inspect
import io
import re
import textwrap
import tokenize
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

__all__ = ["FieldDoc", "describe_params", "field_docs", "format_params", "format_resolved", "text_table"]


@attrs.frozen
class FieldDoc:
    """One row of :func:`describe_params`.

    Attributes:
        name: the dotted config name below the params block (``lr``, ``optimizer.lr``).
        type: the annotation as written (``tuple[int, ...] | None``).
        default: the default as text, or ``required``.
        doc: the field's documentation ("" when it has none).
        check: the value check of its validators (``> 0``, ``in [0, 1)``), "" when none.
    """

    name: str
    type: str
    default: str
    doc: str = ""
    check: str = ""

    @property
    def required(self) -> bool:
        return self.default == "required"


def describe_params(cls: type) -> list[FieldDoc]:
    """Every field of the attrs class ``cls`` (recursing into nested attrs classes), in order."""
    if not (isinstance(cls, type) and attrs.has(cls)):
        raise TypeError(f"describe_params expects an attrs class, got {cls!r}")
    return _describe(cls, "", set())


def _describe(cls: type, prefix: str, stack: set[type]) -> list[FieldDoc]:
    docs = field_docs(cls)
    hints = _type_hints(cls)
    rows: list[FieldDoc] = []
    for a in attrs.fields(cls):
        name = f"{prefix}{a.name}"
        hint = hints.get(a.name, a.type)
        nested, many = _nested_attrs(hint)
        rows.append(FieldDoc(name, _type_text(hint), _default_text(a), docs.get(a.name, ""), _check_text(a.validator)))
        if nested is not None and nested not in stack:
            rows += _describe(nested, f"{name}[]." if many else f"{name}.", stack | {cls, nested})
    return rows


def field_docs(cls: type) -> dict[str, str]:
    """Field name -> doc for ``cls`` and its attrs base classes (``#:`` comments, then the docstring's
    ``Attributes:`` section, then plain trailing comments)."""
    out: dict[str, str] = {}
    for klass in reversed([k for k in cls.__mro__ if attrs.has(k)]):  # subclasses override bases
        comments, trailing = _comment_docs(klass)
        attributes = _attributes_section(klass.__doc__ or "")
        for name in {*trailing, *attributes, *comments}:
            doc = comments.get(name) or attributes.get(name) or trailing.get(name)
            if doc:
                out[name] = doc
    return out


# ---------------------------------------------------------------------------------------------
# docs from the source: #: comments
# ---------------------------------------------------------------------------------------------


def _comment_docs(cls: type) -> tuple[dict[str, str], dict[str, str]]:
    """(``#:`` docs, plain trailing-comment docs) of the fields assigned in ``cls``'s own body."""
    try:
        source = textwrap.dedent(inspect.getsource(cls))
        tree = ast.parse(source)
    except (OSError, TypeError, SyntaxError):  # no source (built dynamically, frozen app, REPL)
        return {}, {}
    node = next((n for n in tree.body if isinstance(n, ast.ClassDef)), None)
    if node is None:
        return {}, {}
    comments: dict[int, str] = {}  # line -> comment text
    code_lines: set[int] = set()
    try:
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            if tok.type == tokenize.COMMENT:
                comments[tok.start[0]] = tok.string
            elif tok.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER):
                code_lines.update(range(tok.start[0], tok.end[0] + 1))
    except (tokenize.TokenError, IndentationError):
        return {}, {}
    above: dict[str, str] = {}
    trailing: dict[str, str] = {}
    for stmt in node.body:
        name = _assigned_name(stmt)
        if name is None:
            continue
        block: list[str] = []
        line = stmt.lineno - 1
        while line in comments and line not in code_lines and comments[line].startswith("#:"):
            block.insert(0, comments[line][2:].strip())
            line -= 1
        after = comments.get(stmt.end_lineno or stmt.lineno, "")
        if block:
            above[name] = " ".join(block).strip()
        elif after.startswith("#:"):
            above[name] = after[2:].strip()
        if after and not after.startswith("#:"):
            trailing[name] = after[1:].strip()
    return above, trailing


def _assigned_name(stmt: ast.stmt) -> str | None:
    if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
        return stmt.target.id
    if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
        return stmt.targets[0].id  # x = attr.ib(...)
    return None


# ---------------------------------------------------------------------------------------------
# docs from the docstring: a Google-style Attributes: section
# ---------------------------------------------------------------------------------------------

_SECTIONS = {"args", "arguments", "attributes", "example", "examples", "note", "notes", "raises", "references",
             "returns", "return", "see also", "todo", "warning", "warnings", "yields", "parameters", "methods"}
_ENTRY = re.compile(r"^(?P<names>[A-Za-z_]\w*(?:\s*[/,]\s*[A-Za-z_]\w*)*)\s*(?:\([^)]*\))?\s*:(?:\s+(?P<text>.*))?$")


def _attributes_section(docstring: str) -> dict[str, str]:
    lines = inspect.cleandoc(docstring).splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip().lower() == "attributes:"), None)
    if start is None:
        return {}
    header_indent = _indent(lines[start])
    body = lines[start + 1 :]
    first = next((line for line in body if line.strip()), None)
    if first is None:
        return {}
    entry_indent = _indent(first)
    if entry_indent < header_indent:
        return {}
    out: dict[str, list[str]] = {}
    current: list[str] = []
    for line in body:
        if not line.strip():
            continue
        indent, text = _indent(line), line.strip()
        if indent < entry_indent or (indent <= header_indent and text.rstrip(":").lower() in _SECTIONS and text.endswith(":")):
            break
        match = _ENTRY.match(text) if indent == entry_indent else None
        if match:
            current = [match.group("text") or ""]
            for name in re.split(r"\s*[/,]\s*", match.group("names")):
                out[name] = current  # shared: "protocol / protocols: ..." documents both
        elif indent > entry_indent and out:
            current.append(text)
        else:
            break
    return {name: " ".join(part for part in parts if part).strip() for name, parts in out.items()}


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


# ---------------------------------------------------------------------------------------------
# types, defaults, checks
# ---------------------------------------------------------------------------------------------


def _type_hints(cls: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls)
    except Exception:  # an annotation that does not resolve: keep the text, skip recursion
        return {}


def _nested_attrs(hint: Any) -> tuple[type | None, bool]:
    """(the attrs class ``hint`` holds, whether a sequence of them) for ``X``, ``X | None``,
    ``tuple[X, ...]`` and ``list[X]``."""
    if isinstance(hint, type) and attrs.has(hint):
        return hint, False
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        return _nested_attrs(inner[0]) if len(inner) == 1 else (None, False)
    if origin in (tuple, list) and args and (origin is list or (len(args) == 2 and args[1] is Ellipsis)):
        if isinstance(args[0], type) and attrs.has(args[0]):
            return args[0], True
    return None, False


def _type_text(t: Any) -> str:
    if t is None:
        return ""
    if isinstance(t, str):
        return t
    if isinstance(t, type) and not typing.get_args(t):
        return t.__qualname__
    # the same text whether attrs holds the annotation as a string or (after cattrs resolved it) as a
    # type: module paths dropped (``tuple[facerep.config.EvalConfig, ...]`` -> ``tuple[EvalConfig, ...]``)
    parts = re.split(r"('[^']*'|\"[^\"]*\")", repr(t))  # quoted Literal values stay as they are
    text = "".join(p if i % 2 else re.sub(r"\b(?:[A-Za-z_]\w*\.)+(?=[A-Za-z_]\w*)", "", p) for i, p in enumerate(parts))
    return text.replace("NoneType", "None")


def _default_text(a: attrs.Attribute) -> str:
    default = a.default
    if default is attrs.NOTHING:
        return "required"
    if isinstance(default, attrs.Factory):  # type: ignore[arg-type]
        if default.takes_self:
            return "(computed)"
        try:
            default = default.factory()
        except Exception:
            return "(computed)"
    if attrs.has(type(default)):
        try:
            if default == type(default)():
                return f"{type(default).__name__}()"
        except Exception:
            pass
    return _value_text(default)


def _check_text(validator: Any) -> str:
    if validator is None:
        return ""
    parts = getattr(validator, "_validators", None)  # attrs' and_() of a validator list
    if parts is not None:
        return ", ".join(t for t in map(_check_text, parts) if t)
    text = getattr(validator, "text", None)
    return text if isinstance(text, str) else ""


def _value_text(value: Any) -> str:
    """A value as YAML-like text: strings bare (quoted when empty), sequences as ``[a, b]``."""
    if isinstance(value, str):
        return value if value and value.strip() == value else repr(value)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple | list):
        return "[" + ", ".join(map(_value_text, value)) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{_value_text(k)}: {_value_text(v)}" for k, v in value.items()) + "}"
    return repr(value)


# ---------------------------------------------------------------------------------------------
# tables
# ---------------------------------------------------------------------------------------------


def text_table(rows: list[Sequence[str]], header: Sequence[str]) -> str:
    """Columns padded to their widest cell, a dashed rule under the header (``facerep list``, the
    component table of a run, the bench's plan). Here, below the commands that print it."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


def _table(rows: list[tuple[str, ...]], header: tuple[str, ...]) -> str:
    """A params table: as :func:`text_table`, but the last column (a description) sets no width."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header) - 1)]  # the last column is free
    line = lambda r: "  ".join([*(c.ljust(w) for c, w in zip(r[:-1], widths, strict=True)), r[-1]]).rstrip()
    return "\n".join([line(header), line(tuple("-" * w for w in [*widths, len(header[-1])])), *map(line, rows)])


def format_params(cls: type, *, skip: tuple[str, ...] = ()) -> str:
    """The fields of ``cls`` as a table: name, type, default (or ``required``), check, description.
    ``skip``: leave out the fields nested under these (e.g. ``("train",)``, documented on their own)."""
    under = lambda name: any(name.startswith(f"{s}.") or name.startswith(f"{s}[]") for s in skip)
    rows = [(d.name, d.type, d.default, d.check, d.doc) for d in describe_params(cls) if not under(d.name)]
    if not rows:
        return f"{cls.__name__}: no parameters"
    return _table(rows, ("name", "type", "default", "check", "description"))


def format_resolved(params: Any) -> str:
    """The values of a structured params instance, one dotted name per line (nested attrs classes
    and tuples of them flattened: ``optimizer.lr``, ``roots.0.path``)."""
    if params is None:
        return "(no parameters)"
    if not attrs.has(type(params)):
        return _value_text(params)
    rows = list(_flatten(params, ""))
    if not rows:
        return "(no parameters)"
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name.ljust(width)}  {value}" for name, value in rows)


def _flatten(obj: Any, prefix: str) -> Any:
    for a in attrs.fields(type(obj)):
        value = getattr(obj, a.name)
        name = f"{prefix}{a.name}"
        if attrs.has(type(value)):
            yield from _flatten(value, f"{name}.")
        elif isinstance(value, tuple | list) and value and all(attrs.has(type(v)) for v in value):
            for i, item in enumerate(value):
                yield from _flatten(item, f"{name}.{i}.")
        else:
            yield name, _value_text(value)
