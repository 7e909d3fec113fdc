"""Annoy-DataSync: turn raw code into verified input/output reasoning data.

The library behind the step scripts in ``src/``: JSONL I/O (`jsonl`), status constants
(`status`), prompt templates (`prompts`), the sections of a unified response (`sections`),
the answers of predictions (`answers`), the sandboxed executor (`executor`), JSON
comparison (`compare`) and the inference client (`client`); README.md's layout table lists
every module.
"""

__version__ = "0.1.0"
