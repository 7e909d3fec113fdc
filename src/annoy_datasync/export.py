"""Turn final records into conversations that training frameworks read.

A final record ``{"prompt", "turn_1", "feedback_1", "turn_2", "feedback_2"}`` becomes
- one exchange (user prompt, assistant turn_1) when turn 1 passed (``turn_2`` is null);
- two exchanges (prompt, turn_1, the revision request built from feedback_1, turn_2)
  when it was revised, or only (prompt, turn_2) with ``drop_feedback``.
Conversations are written as ShareGPT (``{"conversations": [{"from", "value"}]}``) or
OpenAI messages (``{"messages": [{"role", "content"}]}``); `dataset_info_entry` gives the
LLaMA-Factory description of either file.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from typing import Any

from .jsonl import InputError, atomic_text, require, where
from .status import EXPORTED_MULTI, EXPORTED_SINGLE, EXPORTED_TURN2_ONLY

USER, ASSISTANT, SYSTEM = "user", "assistant", "system"
FORMATS = ("sharegpt", "openai")

# format -> (messages column, role key, content key, role names)
LAYOUT = {
    "sharegpt": ("conversations", "from", "value",
                 {USER: "human", ASSISTANT: "gpt", SYSTEM: "system"}),
    "openai": ("messages", "role", "content",
               {USER: "user", ASSISTANT: "assistant", SYSTEM: "system"}),
}

_PLACEHOLDER = re.compile(r"\{\{\s*[A-Za-z_][A-Za-z0-9_]*\s*\}\}")


class TipRemover:
    """Cuts the reference-code tip off the end of a prompt.

    The tip is either a template whose ``{{name}}`` placeholders may stand for any text
    (the ``refcode_tip`` of prompts.yaml, appended after a blank line), or a literal
    `marker`: the prompt is cut where the last occurrence of the marker starts.
    A prompt that does not end with the tip is returned unchanged (``found`` is False).
    """

    def __init__(self, template: str | None = None, marker: str | None = None):
        if not template and not marker:
            raise ValueError("a tip template or a marker is needed")
        self.marker = marker
        self.head = self.rest = None
        if template:
            literals = _PLACEHOLDER.split(template)
            if not literals[0].strip():
                raise ValueError("the tip template starts with a placeholder, so where the tip "
                                 "begins cannot be found; give a marker instead")
            self.head = literals[0]
            # the text after the head: literal pieces with anything between them, to the end
            body = "(?:.*?)".join(re.escape(p) for p in literals[1:])
            if len(literals) > 1:
                body = "(?:.*?)" + body
            self.rest = re.compile(body + r"\s*\Z", re.DOTALL)

    def __call__(self, prompt: str) -> tuple[str, bool]:
        if self.head is not None:
            cut = self._cut_template(prompt)
            if cut is not None:
                return prompt[:cut].rstrip(), True
        if self.marker:
            cut = prompt.rfind(self.marker)
            if cut >= 0:
                return prompt[:cut].rstrip(), True
        return prompt, False

    def _cut_template(self, prompt: str) -> int | None:
        # the last start of the head whose remainder matches the template to the end:
        # a problem text quoting the tip's first words earlier does not move the cut
        end = len(prompt)
        while (start := prompt.rfind(self.head, 0, end)) >= 0:
            if self.rest.match(prompt, start + len(self.head)):
                return start
            end = start + len(self.head) - 1
        return None


def _text(record: Mapping, field: str, path: str, lineno: int) -> str:
    value = record.get(field)
    if not isinstance(value, str):
        raise InputError(f'{where(path, lineno)}: "{field}" should be a string, '
                         f"got {type(value).__name__}; is this a final file (assemble_spec_demo.py)?")
    return value


def conversation(record: Mapping, path: str, lineno: int, *,
                 revision: Any = None, drop_feedback: bool = False,
                 tip: TipRemover | None = None) -> tuple[list[tuple[str, str]], str, bool | None]:
    """The turns ``[(role, text), ...]`` of one final record, its kind, and whether a tip
    was removed (None when no removal was asked for).

    `revision` turns feedback_1 into the user message of the second turn (the wording the
    model saw, e.g. ``Prompts.revision``); None keeps the verifier's message as it is.
    """
    require(record, ["prompt", "turn_1", "turn_2"], path, lineno)
    prompt = _text(record, "prompt", path, lineno)
    removed = None
    if tip is not None:
        prompt, removed = tip(prompt)
    turns = [(USER, prompt)]
    if record["turn_2"] is None:
        turns.append((ASSISTANT, _text(record, "turn_1", path, lineno)))
        return turns, EXPORTED_SINGLE, removed
    turn_2 = _text(record, "turn_2", path, lineno)
    if drop_feedback:
        turns.append((ASSISTANT, turn_2))
        return turns, EXPORTED_TURN2_ONLY, removed
    feedback = _text(record, "feedback_1", path, lineno)
    turns += [(ASSISTANT, _text(record, "turn_1", path, lineno)),
              (USER, revision(feedback) if revision else feedback),
              (ASSISTANT, turn_2)]
    return turns, EXPORTED_MULTI, removed


def render(turns: list[tuple[str, str]], fmt: str, system: str | None = None) -> dict:
    """One exported line in format `fmt` ("sharegpt" or "openai")."""
    column, role_key, content_key, names = LAYOUT[fmt]
    msgs = [{role_key: names[role], content_key: text} for role, text in turns]
    if system and fmt == "openai":
        return {column: [{role_key: names[SYSTEM], content_key: system}, *msgs]}
    line: dict[str, Any] = {column: msgs}
    if system:
        line["system"] = system
    return line


def dataset_info_entry(file_name: str, fmt: str, system: bool = False) -> dict:
    """LLaMA-Factory's description of an exported file (its data/README.md format)."""
    column, role_key, content_key, names = LAYOUT[fmt]
    entry: dict[str, Any] = {
        "file_name": file_name,
        "formatting": "sharegpt",  # LLaMA-Factory reads OpenAI messages as sharegpt with tags
        "columns": {"messages": column},
        "tags": {"role_tag": role_key, "content_tag": content_key,
                 "user_tag": names[USER], "assistant_tag": names[ASSISTANT]},
    }
    if fmt == "openai":
        entry["tags"]["system_tag"] = names[SYSTEM]
    elif system:
        entry["columns"]["system"] = "system"
    return entry


def update_dataset_info(path: str, name: str, entry: dict) -> dict:
    """Add or replace entry `name` in the dataset_info.json at `path`, keeping the others.

    Rewritten through `jsonl.atomic_text`. Returns the whole new mapping.
    """
    info: dict[str, Any] = {}
    if os.path.exists(path):
        try:
            with open(path, encoding="utf-8") as fh:
                info = json.load(fh)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise InputError(f"{path}: not valid JSON ({exc}); fix or remove it") from None
        if not isinstance(info, dict):
            raise InputError(f"{path}: should be a JSON object of dataset name -> description")
    info[name] = entry
    with atomic_text(path) as fh:
        json.dump(info, fh, indent=2, ensure_ascii=False)
        fh.write("\n")
    return info
