"""What tokens cost: a price table of known models (``prices.yaml``, editable) and the
arithmetic. Prices are US dollars per million tokens. A request answered through a
provider's Batch API costs the listed prices less the entry's ``batch_discount`` (a share,
0.5 unless the entry says otherwise; 0, the full price, for a provider without a Batch
API)."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from .jsonl import InputError, read_yaml

log = logging.getLogger(__name__)

DEFAULT_TABLE = os.path.join(os.path.dirname(__file__), "prices.yaml")
BATCH_DISCOUNT = 0.5      # OpenAI's Batch API: half the listed price


@dataclass(frozen=True)
class Price:
    input: float
    output: float
    cached_input: float | None = None     # None: cached prompt tokens cost the full price
    batch_discount: float = BATCH_DISCOUNT  # share of every price a Batch API request saves

    def cost(self, prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0) -> float:
        """Dollars for these tokens; `cached_tokens` is the part of `prompt_tokens` the
        provider served from its prompt cache."""
        cached = min(max(cached_tokens, 0), prompt_tokens) if self.cached_input is not None else 0
        return ((prompt_tokens - cached) * self.input + cached * (self.cached_input or 0.0)
                + completion_tokens * self.output) / 1e6

    def at_batch(self) -> Price:
        """The prices of a request sent through the Batch API (no further discount)."""
        keep = 1.0 - self.batch_discount
        return Price(self.input * keep, self.output * keep,
                     None if self.cached_input is None else self.cached_input * keep, 0.0)


def load_table(path: str | None = None, batch_discount: float | None = None) -> dict[str, Price]:
    """The price table of a YAML file (default: the built-in `DEFAULT_TABLE`):
    ``model: {input, output, cached_input, batch_discount}``; `batch_discount`, when given,
    replaces every entry's (a run's --batch_discount)."""
    path = path or DEFAULT_TABLE
    raw = read_yaml(path, "price table") or {}
    if not isinstance(raw, dict):
        raise InputError(f"{path}: a price table maps model names to prices")
    table = {}
    for model, entry in raw.items():
        price = _price(entry, f"{path}: {model}")
        if batch_discount is not None:
            price = replace(price, batch_discount=batch_discount)
        table[str(model).lower()] = price
    return table


def _price(entry: Any, where: str) -> Price:
    if not isinstance(entry, Mapping):
        raise InputError(f"{where}: expected {{input: $, output: $}} per million tokens")
    values = {}
    for name in ("input", "output", "cached_input", "batch_discount"):
        v = entry.get(name)
        if v is None and name in ("input", "output"):
            raise InputError(f"{where}: no {name} price")
        if v is not None and (not isinstance(v, (int, float)) or isinstance(v, bool) or v < 0):
            raise InputError(f"{where}: {name} should be a non-negative number, got {v!r}")
        values[name] = None if v is None else float(v)
    discount = values["batch_discount"]
    if discount is not None and discount > 1:
        raise InputError(f"{where}: batch_discount is the share of the price a batch saves, "
                         f"between 0 and 1 (0.5: half the price), got {discount!r}")
    return Price(values["input"], values["output"], values["cached_input"],
                 BATCH_DISCOUNT if discount is None else discount)


def lookup(model: str, table: Mapping[str, Price]) -> Price | None:
    """The entry of `model`: exact, else the longest entry it starts with; None if unknown."""
    name = model.lower().rsplit("/", 1)[-1]
    if name in table:
        return table[name]
    best = max((k for k in table if name.startswith(k)), key=len, default=None)
    return table[best] if best else None


def resolve(model: str, price_in: float | None, price_out: float | None,
            table_path: str | None = None, batch_discount: float | None = None) -> Price | None:
    """Flags win; else the table's entry for `model` (cached-input price from the table
    only when the flags are not given; the batch discount from the table unless
    `batch_discount` is given, else 0.5)."""
    entry = lookup(model, load_table(table_path, batch_discount))
    if price_in is None and price_out is None:
        return entry
    if price_in is None or price_out is None:
        if entry is None:
            raise InputError("--price_in and --price_out go together (no table entry for "
                             f"{model!r} to take the other from)")
        price_in = entry.input if price_in is None else price_in
        price_out = entry.output if price_out is None else price_out
    if batch_discount is None:
        batch_discount = entry.batch_discount if entry is not None else BATCH_DISCOUNT
    return Price(price_in, price_out, None, batch_discount)


def batch_price(price: Price, model: str) -> Price:
    """`price.at_batch()`; a warning when that is the full price (a batch_discount of 0: the
    table's entry of a provider without a Batch API, or a run's --batch_discount 0)."""
    if not price.batch_discount:
        log.warning("%s: a batch discount of 0 (the price table's entry of a provider without "
                    "a Batch API, or --batch_discount 0): answers through a batch are priced "
                    "at the full price; --batch_discount F sets the share they save", model)
    return price.at_batch()


def dollars(x: float) -> str:
    return f"${x:.4f}" if x < 10 else f"${x:,.2f}"
