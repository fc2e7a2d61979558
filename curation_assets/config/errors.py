"""Config problems a user can act on: one line each, `<file>: <key.path>: <message>`.

`ConfigError` carries every problem found in one pass (all four files, cross-file checks, the environment), so a
user fixes them in one round. Pydantic's errors are mapped here: their `loc` becomes the key path as written in the
YAML (`sources[web].uris[1]`, `filtered.per_source.web.min_stop_words`), an unknown key gets the closest valid key of
the model at that location, and no value is rendered longer than `MAX_VALUE` characters.
"""

from __future__ import annotations

import difflib
import re
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

MAX_VALUE = 80  # longest rendering of a user's value in a message
MAX_MESSAGE = 300  # longest message part of a line
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")  # a list item's `name` short and plain enough to be a key


class ConfigError(ValueError):
    """Every problem of a configuration, one line each (`str(error)` is the lines joined by newlines)."""

    def __init__(self, problems: Iterable[str]):
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class KeyedValueError(ValueError):
    """A validator's error about a key below the model it validates: `key` (a tuple of keys and list indices) is
    appended to pydantic's location, so the line names the exact key (pydantic only knows the model's own)."""

    def __init__(self, key: tuple[str | int, ...], message: str):
        self.key = key
        super().__init__(message)


def short(value: Any, limit: int = MAX_VALUE) -> str:
    """`repr(value)` cut to `limit` characters (a user's value can be a 10 MB string)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def line(path: str | Path, key: str, message: str) -> str:
    """One problem: `<file>: <key.path>: <message>` (`<file>: <message>` without a key), on one line whatever the
    message holds."""
    message = " ".join(str(message).split())
    if len(message) > MAX_MESSAGE:
        message = message[: MAX_MESSAGE - 3] + "..."
    key = " ".join(str(key).split())  # a key is the user's text too: a 1 MB key stays one short line
    if len(key) > MAX_MESSAGE:
        key = key[: MAX_MESSAGE - 3] + "..."
    return f"{path}: {key}: {message}" if key else f"{path}: {message}"


def closest(word: str, candidates: Iterable[str]) -> str | None:
    """The candidate `word` most likely misspells (difflib ratio >= 0.6), or None."""
    match = difflib.get_close_matches(str(word), sorted(set(candidates)), n=1, cutoff=0.6)
    return match[0] if match else None


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    """` (did you mean 'x'?)`, or ` (valid: a, b, ...)` when nothing is close, or '' when there are no candidates."""
    candidates = sorted(set(candidates))
    if not candidates:
        return ""
    best = closest(word, candidates)
    if best is not None:
        return f" (did you mean {best!r}?)"
    valid = ", ".join(candidates)
    return f" (valid: {valid if len(valid) <= 120 else valid[:117] + '...'})"


def field_names(model: type[BaseModel]) -> list[str]:
    """The keys a model accepts in YAML (the alias where a field has one)."""
    return [f.alias or name for name, f in model.model_fields.items()]


def _model_in(annotation: Any) -> type[BaseModel] | None:
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def _unwrap(annotation: Any) -> list[Any]:
    """The members of a union / Optional (one element otherwise)."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return [a for a in typing.get_args(annotation) if a is not type(None)]
    return [annotation]


def _child(annotation: Any, key: str | int) -> Any:
    """The annotation of `annotation[key]`: a model's field, a dict's value, a list's item; None when unknown."""
    for member in _unwrap(annotation):
        model = _model_in(member)
        if model is not None:
            if isinstance(key, str):
                for name, f in model.model_fields.items():
                    if key in (name, f.alias):
                        return f.annotation
            continue
        origin, args = typing.get_origin(member), typing.get_args(member)
        if origin in (dict, Mapping, typing.Mapping) and len(args) == 2:
            return args[1]
        if origin in (list, tuple, Sequence, set, frozenset) and args and isinstance(key, int):
            return args[0]
    return None


def _accepts(annotation: Any, key: str) -> bool:
    """Whether `key` is a field (or alias) of a model `annotation` (through unions)."""
    return any(
        (m := _model_in(a)) is not None and key in field_names(m) + list(m.model_fields) for a in _unwrap(annotation)
    )


def key_path(loc: Sequence[str | int], data: Any, root: type[BaseModel]) -> tuple[str, Any]:
    """(`a.b[c].d`, the annotation at that location) for a pydantic `loc`, walked alongside the YAML `data`.

    Pydantic adds its own segments (`[key]`, `function-after[...]`, union members); only keys present in the data or
    fields of the model at that point are rendered. A list item with a short `name` renders as `[name]`."""
    out = ""
    node, annotation = data, root
    for item in loc:
        if isinstance(item, int):
            name = None
            if isinstance(node, list) and 0 <= item < len(node):
                item_node = node[item]
                raw_name = item_node.get("name") if isinstance(item_node, dict) else None
                siblings = [n.get("name") for n in node if isinstance(n, dict)]
                plain = isinstance(raw_name, str) and _NAME.fullmatch(raw_name) and siblings.count(raw_name) == 1
                name = raw_name if plain else None
                node = item_node
            else:
                node = None
            out += f"[{name or item}]"
            annotation = _child(annotation, item)
        elif (isinstance(node, dict) and item in node) or _accepts(annotation, item):
            out += f".{item}" if out else str(item)
            node = node.get(item) if isinstance(node, dict) else None
            annotation = _child(annotation, item)
        # else: a segment pydantic adds (`[key]`, `function-after[...]`, a union member's name): not a YAML key
    return out, annotation


def _message(err: Mapping[str, Any], parent: Any) -> str:
    kind, msg = err["type"], err["msg"]
    if kind == "extra_forbidden":
        names = [n for a in _unwrap(parent) if (m := _model_in(a)) is not None for n in field_names(m)]
        return f"unknown key{did_you_mean(str(err['loc'][-1])[:MAX_VALUE], names)}"
    if kind == "missing":
        return "required key missing"
    for prefix in ("Value error, ", "Assertion failed, "):
        msg = msg.removeprefix(prefix)
    if kind == "literal_error" and isinstance(err.get("input"), str):
        expected = re.findall(r"'([^']*)'", str(err.get("ctx", {}).get("expected", "")))
        best = closest(err["input"], expected)
        return f"{msg}, got {short(err['input'])}" + (f" (did you mean {best!r}?)" if best else "")
    if kind not in ("value_error", "assertion_error") and "input" in err:
        return f"{msg}, got {short(err['input'])}"
    return msg


def validation_lines(path: str | Path, error: ValidationError, root: type[BaseModel], data: Any) -> list[str]:
    """One line per error of `root.model_validate(data)` for the YAML file at `path`. A misspelled required key is
    one problem, not two: its `required key missing` line is dropped when the unknown key's line names it."""
    found = []
    for err in error.errors():
        loc = tuple(err["loc"])
        exc = err.get("ctx", {}).get("error")
        if isinstance(exc, KeyedValueError):
            loc += exc.key
        key, _ = key_path(loc, data, root)
        parent_key, parent = key_path(loc[:-1], data, root)  # the model an unknown key was found in
        found.append((err["type"], key, parent_key, _message(err, parent)))
    suggested = {
        f"{parent_key}.{m[1]}" if parent_key else m[1]
        for kind, _, parent_key, message in found
        if kind == "extra_forbidden" and (m := re.search(r"\(did you mean '([^']*)'\?\)", message))
    }
    lines = [
        line(path, key or "(top level)", message)
        for kind, key, _, message in found
        if not (kind == "missing" and key in suggested)
    ]
    return list(dict.fromkeys(lines))
