"""Extraction from model answers (API fixed; implementation in progress).

- `parse_unified(text)`: the four sections of a unified response.
- `last_python_block(text)`: the code of the last ```python block.
- `extract_json_answer(text, key)`: the last complete JSON object of an answer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

SECTION_NAMES = ("Main Function", "Input Output Description", "Input Generator", "Problem Statement")


@dataclass
class Unified:
    main_code: str | None            # code of the ```python block under "## Main Function"
    io_description: str | None       # text under "## Input Output Description"
    generator_code: str | None       # code of the ```python block under "## Input Generator"
    problem_statement: str | None    # text under "## Problem Statement"
    missing: list[str] = field(default_factory=list)  # names from SECTION_NAMES not found / empty


def parse_unified(text: str) -> Unified:
    """Split a unified response into its four sections; never raises on odd text."""
    raise NotImplementedError


def last_python_block(text: str) -> str | None:
    """Code of the last ```python (or ```py / bare ```) block; tolerant of a missing closing fence."""
    raise NotImplementedError


@dataclass
class Answer:
    value: Any | None   # the JSON object (a dict) found, or None
    reason: str         # "" when found; else why not (no JSON, ambiguous, missing key ...)


def extract_json_answer(text: str, key: str | None = None) -> Answer:
    """The last complete JSON object of a model answer.

    With `key` ("output" or "input"), the object must hold that key (the value returned is
    still the whole object). Forgiving of ```json fences, prose, \\boxed{...}, Python literals
    (True/False/None), single quotes, trailing commas; never guessing: when two readings of
    the text differ, returns no answer with reason "ambiguous".
    """
    raise NotImplementedError
