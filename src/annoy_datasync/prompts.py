"""Prompt templates, kept in YAML and loaded by name.

The defaults live in ``prompts.yaml`` beside this module. A user file given with
``--prompts FILE`` overrides any subset of them. Placeholders are ``{{name}}`` markers,
replaced in a single pass, so the braces of code and JSON in a template or in a value are
never mistaken for placeholders (see the header of ``prompts.yaml``).

Every template has a fixed set of placeholders (`TEMPLATE_FIELDS`); a file that names an
unknown template, leaves out a placeholder or uses one that is never filled is rejected
with an `InputError` naming the file and the template.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from .jsonl import InputError, read_yaml

DEFAULT_PATH = Path(__file__).with_name("prompts.yaml")

# name -> the placeholders the template must contain (and the only ones it may contain)
TEMPLATE_FIELDS: dict[str, tuple[str, ...]] = {
    "transform": ("code",),
    "output_pred": ("problem", "io_requirements", "input"),
    "input_pred": ("problem", "io_requirements", "output"),
    "refcode_tip": ("refcode",),
    "revision": ("feedback",),
}

_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


def placeholders(template: str) -> set[str]:
    """Names of the ``{{name}}`` markers in `template`."""
    return set(_PLACEHOLDER.findall(template))


def fill(template: str, fields: Mapping[str, str]) -> str:
    """Replace every ``{{name}}`` by ``fields[name]`` in one pass (values are not re-scanned)."""
    missing = placeholders(template) - set(fields)
    if missing:
        raise KeyError(f"no value for placeholder(s) {', '.join(sorted(missing))}")
    return _PLACEHOLDER.sub(lambda m: fields[m.group(1)], template)


class Prompts(Mapping[str, str]):
    """The loaded templates by name, and where each came from (for error messages)."""

    def __init__(self, templates: dict[str, str], origin: dict[str, str]):
        self._templates = templates
        self.origin = origin

    def __getitem__(self, name: str) -> str:
        return self._templates[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._templates)

    def __len__(self) -> int:
        return len(self._templates)

    def render(self, name: str, **fields: Any) -> str:
        """Fill template `name`; values that are not strings are written as JSON."""
        if name not in self._templates:
            raise KeyError(f"unknown prompt template {name!r}")
        text = {k: v if isinstance(v, str) else to_json_text(v) for k, v in fields.items()}
        return fill(self._templates[name], text)

    # --- the prompts the steps build --------------------------------------------------

    def transform(self, code: str) -> str:
        return self.render("transform", code=code)

    def prediction(self, io_pred: str, *, problem: str, io_requirements: str,
                   io: Mapping[str, Any], refcode: str | None = None) -> str:
        """Input-prediction (``io_pred="i"``) or output-prediction (``"o"``) prompt for one
        I/O pair; the reference-code tip is appended after a blank line when `refcode` is given."""
        if io_pred == "o":
            text = self.render("output_pred", problem=problem, io_requirements=io_requirements,
                               input=io["input"])
        elif io_pred == "i":
            text = self.render("input_pred", problem=problem, io_requirements=io_requirements,
                               output=io["output"])
        else:
            raise ValueError(f'io_pred must be "i" or "o", not {io_pred!r}')
        if refcode is not None:
            text += "\n\n" + self.render("refcode_tip", refcode=refcode)
        return text

    def revision(self, feedback: str) -> str:
        return self.render("revision", feedback=feedback)


def to_json_text(value: Any) -> str:
    """How inputs and outputs appear in prompts: JSON, non-ASCII kept readable."""
    return json.dumps(value, ensure_ascii=False)


def _read_templates(path: str) -> dict[str, str]:
    data = read_yaml(path, "prompts")
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise InputError(
            f"{path}: a prompts file is a YAML mapping of template name to text, "
            f"got a {type(data).__name__}"
        )
    known = ", ".join(sorted(TEMPLATE_FIELDS))
    for name, text in data.items():
        if name not in TEMPLATE_FIELDS:
            raise InputError(f'{path}: unknown template "{name}" (known: {known})')
        if not isinstance(text, str):
            raise InputError(
                f'{path}: template "{name}" should be text, got {type(text).__name__}'
            )
        _check_fields(path, name, text)
    return data


def _check_fields(path: str, name: str, text: str) -> None:
    want = set(TEMPLATE_FIELDS[name])
    have = placeholders(text)
    allowed = " ".join("{{%s}}" % f for f in TEMPLATE_FIELDS[name])
    if want - have:
        miss = " ".join("{{%s}}" % f for f in sorted(want - have))
        raise InputError(f'{path}: template "{name}" lacks {miss} (it must use {allowed})')
    if have - want:
        extra = " ".join("{{%s}}" % f for f in sorted(have - want))
        raise InputError(
            f'{path}: template "{name}" uses {extra}, which is never filled (it may use only {allowed})'
        )


def load_prompts(path: str | os.PathLike | None = None) -> Prompts:
    """The default templates, overridden by those in `path` (a YAML file) when given."""
    default = os.fspath(DEFAULT_PATH)
    templates = _read_templates(default)
    origin = dict.fromkeys(templates, default)
    missing = set(TEMPLATE_FIELDS) - set(templates)
    if missing:  # a broken installation, not a user error
        raise RuntimeError(f"{default}: default template(s) missing: {', '.join(sorted(missing))}")
    if path is not None:
        user = _read_templates(os.fspath(path))
        templates.update(user)
        origin.update(dict.fromkeys(user, os.fspath(path)))
    return Prompts(templates, origin)


__all__ = ["DEFAULT_PATH", "TEMPLATE_FIELDS", "Prompts", "fill", "load_prompts",
           "placeholders", "to_json_text"]
