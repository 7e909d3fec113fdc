"""Annoy-DataSync: turn raw code into verified input/output reasoning data.

The library behind the step scripts in ``src/``: JSONL I/O (`jsonl`), status constants
(`status`), prompt templates (`prompts`), extraction from model answers (`extract`), the
sandboxed executor (`executor`), JSON comparison (`compare`) and the inference client
(`client`).
"""

__version__ = "0.1.0"
