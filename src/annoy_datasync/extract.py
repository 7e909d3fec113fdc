"""Extraction from model answers, kept as one import for callers.

The code lives in two modules, along its two subjects:

- `sections`: fenced code blocks and the sections of a unified response
  (`parse_unified`, `last_python_block`);
- `answers`: JSON answers of predictions, the method's rule and the lenient one
  (`extract_answer`, `method_answer`, `extract_json_answer`).
"""

from .answers import (  # noqa: F401 - re-exported
    AMBIGUOUS, INCOMPLETE, INVALID, LENIENT, MAX_DEPTH, MAX_DIGITS, MAX_LITERAL_CHARS,
    MAX_OBJECT_CHARS, MAX_RIVALS, METHOD, NO_JSON, NO_KEY, NO_TEXT, NOT_OBJECT, RULES, Answer,
    extract_answer, extract_json_answer, method_answer,
)
from .sections import SECTION_NAMES, Unified, last_python_block, parse_unified  # noqa: F401
