"""The report of a run: what every step kept, dropped and spent, read from its files.

`build_report` streams each file of a run once (counters only, so memory stays flat
whatever the size of the run) and returns a plain dict that is written as JSON;
`render_markdown` turns that dict into the human report and `plot_report` into the figure.
A file that does not exist is reported as absent; the stages after it show no count.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from . import layout, prices, status
from .indexset import IndexSet
from .jsonl import read_jsonl

IO_PREDS = ("i", "o")
IO_PRED_NAMES = {"i": "input prediction", "o": "output prediction"}
UNKNOWN = "unknown"  # a field the file should carry but a record lacks


@dataclass
class RunFiles:
    """Paths of the files of one run (README names). ``None`` means "not given"."""

    raw_code: str | None = None
    transform_msg: str | None = None
    unified: str | None = None
    unified_failed: str | None = None
    parsed: str | None = None
    parsed_dropped: str | None = None
    spec_msg: str | None = None
    gens: str | None = None
    gens_failed: str | None = None
    verified: str | None = None
    rev_msg: str | None = None
    rev_gens: str | None = None
    rev_gens_failed: str | None = None
    rev_verified: str | None = None
    final: str | None = None


def sidecar(path: str | None, kind: str) -> str | None:
    """The side file a step writes next to `path`: ``x.jsonl`` -> ``x.jsonl.<kind>.jsonl``
    (`layout.side_file`, the default of batched_api_inference.py and parse_gen_ios.py), or
    else ``x.<kind>.jsonl`` if only that one exists.
    """
    if not path:
        return None
    stem = path[: -len(".jsonl")] if path.endswith(".jsonl") else path
    candidates = [layout.side_file(path, kind), f"{stem}.{kind}.jsonl"]
    for c in candidates:
        if os.path.isfile(c):
            return c
    return candidates[0]


def fill_sidecars(files: RunFiles) -> RunFiles:
    """Derive the side files the caller did not name from their main files."""
    if files.unified_failed is None:
        files.unified_failed = sidecar(files.unified, layout.FAILED)
    if files.parsed_dropped is None:
        files.parsed_dropped = sidecar(files.parsed, layout.DROPPED)
    if files.gens_failed is None:
        files.gens_failed = sidecar(files.gens, layout.FAILED)
    if files.rev_gens_failed is None:
        files.rev_gens_failed = sidecar(files.rev_gens, layout.FAILED)
    return files


def _present(path: str | None) -> bool:
    return bool(path) and os.path.isfile(path)


def _file_info(path: str | None, records: int | None = None, bad: int = 0) -> dict:
    info: dict[str, Any] = {"path": path, "present": _present(path)}
    if info["present"]:
        info["records"] = records
        info["bad_lines"] = bad
    return info


def _as_index(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _io_pred(record: Mapping) -> str:
    p = record.get("io_pred")
    return p if p in IO_PREDS else UNKNOWN


def _sorted(counter: Mapping[str, int]) -> dict[str, int]:
    """Counts most common first (ties by name), zeros left out: stable JSON and tables."""
    return {k: v for k, v in sorted(counter.items(), key=lambda kv: (-kv[1], str(kv[0]))) if v}


# --- one function per kind of file ------------------------------------------------------

def count_records(path: str | None) -> dict:
    """Presence, number of records and of skipped (torn/invalid) lines of a JSONL file."""
    if not _present(path):
        return _file_info(path)
    reader = read_jsonl(path)
    n = sum(1 for _ in reader)
    return _file_info(path, n, len(reader.bad))


def inference_stats(output: str | None, failed: str | None,
                    table: Mapping[str, prices.Price] | None = None) -> dict:
    """Succeeded requests, failed ones by reason, tokens spent, finish reasons, cost at the
    prices of `table` (default: the built-in table).

    Rows answered through a Batch API (``usage.batch`` true, see batch_api.py) are counted in
    ``via_batch`` and priced at the batch price. A request counts once: a repeated ``index`` in the output is counted in
    ``duplicates``, and a failure whose index later succeeded (a rerun retried it) is
    not a failure. Among repeated failures of one index the last reason is kept.
    """
    out = _file_info(output)
    res: dict[str, Any] = {"output": out, "failed_file": _file_info(failed)}
    done = IndexSet()
    succeeded = duplicates = no_index = via_batch = 0
    tokens: Counter[str] = Counter()
    finish: Counter[str] = Counter()
    models: Counter[str] = Counter()
    by_model: dict[tuple[str, bool], Counter[str]] = {}   # tokens by (model, batch): the cost
    if out["present"]:
        reader = read_jsonl(output)
        lines = 0
        for _, rec in reader:
            lines += 1
            idx = _as_index(rec.get("index"))
            if idx is None:
                no_index += 1
            elif not done.add(idx):
                duplicates += 1
                continue
            succeeded += 1
            usage = rec.get("usage")
            if isinstance(usage, dict):
                batch = usage.get("batch") is True
                via_batch += batch
                mine = by_model.setdefault((str(rec.get("model")), batch), Counter())
                for key in ("prompt_tokens", "completion_tokens", "total_tokens", "cached_tokens"):
                    v = usage.get(key)
                    if isinstance(v, int) and not isinstance(v, bool):
                        tokens[key] += v
                        mine[key] += v
            finish[str(rec.get("finish_reason"))] += 1
            if rec.get("model"):
                models[str(rec["model"])] += 1
        out.update(records=lines, bad_lines=len(reader.bad))
    failed_reason: dict[int, str] = {}  # bounded by the number of failures, not the run
    failed_no_index: Counter[str] = Counter()
    if res["failed_file"]["present"]:
        reader = read_jsonl(failed)
        lines = 0
        for _, rec in reader:
            lines += 1
            reason = str(rec.get("reason") or status.FAIL_OTHER)
            idx = _as_index(rec.get("index"))
            if idx is None:
                failed_no_index[reason] += 1
            elif idx not in done:
                failed_reason[idx] = reason
        res["failed_file"].update(records=lines, bad_lines=len(reader.bad))
    failures = Counter(failed_reason.values()) + failed_no_index
    if "total_tokens" not in tokens and tokens:
        tokens["total_tokens"] = tokens["prompt_tokens"] + tokens["completion_tokens"]
    res.update(
        succeeded=succeeded if out["present"] else None,
        duplicates=duplicates,
        without_index=no_index,
        via_batch=via_batch,
        failed=sum(failures.values()),
        failed_by_reason=_sorted(failures),
        prompt_tokens=tokens["prompt_tokens"],
        completion_tokens=tokens["completion_tokens"],
        total_tokens=tokens["total_tokens"],
        finish_reasons=_sorted(finish),
        models=_sorted(models),
        cost=answers_cost(by_model, table),
    )
    return res


def answers_cost(by_model: Mapping[tuple[str, bool], Mapping[str, int]],
                 table: Mapping[str, prices.Price] | None = None) -> float | None:
    """Dollars of these tokens by (model, answered through a batch) at the prices of `table`
    (default: the built-in prices.yaml), batch answers at the batch price; None when a model
    that used tokens has no price."""
    if table is None:
        table = prices.load_table()
    total = 0.0
    for (model, batch), t in by_model.items():
        if not (t["prompt_tokens"] or t["completion_tokens"]):
            continue
        price = prices.lookup(model, table)
        if price is None:
            return None
        if batch:
            price = prices.batch_price(price, model)
        total += price.cost(t["prompt_tokens"], t["completion_tokens"], t["cached_tokens"])
    return total


def _median_of_histogram(hist: Mapping[int, int]) -> float | None:
    n = sum(hist.values())
    if not n:
        return None
    lo_rank, hi_rank = (n - 1) // 2, n // 2  # 0-based ranks of the middle element(s)
    seen, lo = 0, None
    for value in sorted(hist):
        seen += hist[value]
        if lo is None and seen > lo_rank:
            lo = value
        if seen > hi_rank:
            return (lo + value) / 2
    return None  # not reached


def parse_stats(parsed: str | None, dropped: str | None) -> dict:
    """Kept samples, dropped ones by reason, I/O pairs dropped by reason, pairs per sample."""
    res: dict[str, Any] = {"parsed_file": _file_info(parsed), "dropped_file": _file_info(dropped)}
    kept = 0
    ios_hist: Counter[int] = Counter()
    pair_drops: Counter[str] = Counter()
    categories: Counter[str] = Counter()
    if res["parsed_file"]["present"]:
        reader = read_jsonl(parsed)
        for _, rec in reader:
            kept += 1
            ios = rec.get("ios")
            ios_hist[len(ios) if isinstance(ios, list) else 0] += 1
            meta = rec.get("meta")
            if isinstance(meta, dict):
                _add_counts(pair_drops, meta.get("pair_drops"))
            categories[str(rec.get("category") or UNKNOWN)] += 1
        res["parsed_file"].update(records=kept, bad_lines=len(reader.bad))
    drops: Counter[str] = Counter()
    if res["dropped_file"]["present"]:
        reader = read_jsonl(dropped)
        for _, rec in reader:
            drops[str(rec.get("reason") or UNKNOWN)] += 1
            _add_counts(pair_drops, rec.get("pair_drops"))
        res["dropped_file"].update(records=sum(drops.values()), bad_lines=len(reader.bad))
    n_pairs = sum(k * v for k, v in ios_hist.items())
    res.update(
        kept=kept if res["parsed_file"]["present"] else None,
        dropped=sum(drops.values()),
        dropped_by_reason=_sorted(drops),
        pair_drops=_sorted(pair_drops),
        categories=_sorted(categories),
        ios_per_sample={
            "samples": kept,
            "pairs": n_pairs,
            "min": min(ios_hist) if ios_hist else None,
            "median": _median_of_histogram(ios_hist),
            "mean": round(n_pairs / kept, 3) if kept else None,
            "max": max(ios_hist) if ios_hist else None,
            "histogram": {str(k): ios_hist[k] for k in sorted(ios_hist)},
        },
    )
    return res


def _add_counts(total: Counter[str], counts: Any) -> None:
    if isinstance(counts, dict):
        for k, v in counts.items():
            if isinstance(v, int) and not isinstance(v, bool):
                total[str(k)] += v


def messages_stats(path: str | None) -> dict:
    """Number of prediction prompts, by io_pred."""
    info = _file_info(path)
    by_pred: Counter[str] = Counter()
    if info["present"]:
        reader = read_jsonl(path)
        for _, rec in reader:
            by_pred[_io_pred(rec)] += 1
        info.update(records=sum(by_pred.values()), bad_lines=len(reader.bad))
    return {"file": info, "total": info.get("records"), "by_io_pred": _sorted(by_pred)}


def verified_stats(path: str | None) -> dict:
    """Verdicts (``res.status``) overall and per io_pred."""
    info = _file_info(path)
    per: dict[str, Counter[str]] = {}
    if info["present"]:
        reader = read_jsonl(path)
        n = 0
        for _, rec in reader:
            n += 1
            res = rec.get("res")
            verdict = res.get("status") if isinstance(res, dict) else None
            per.setdefault(_io_pred(rec), Counter())[str(verdict or UNKNOWN)] += 1
        info.update(records=n, bad_lines=len(reader.bad))
    overall: Counter[str] = sum(per.values(), Counter())
    return {
        "file": info,
        "total": info.get("records"),
        "success": overall[status.SUCCESS] if info["present"] else None,
        "statuses": _sorted(overall),
        "by_io_pred": {
            p: {"total": sum(c.values()), "success": c[status.SUCCESS], "statuses": _sorted(c)}
            for p, c in sorted(per.items())
        },
    }


def final_stats(path: str | None) -> dict:
    """Final records: passed in turn 1, passed in turn 2, kept though failed; by io_pred."""
    info = _file_info(path)
    single = multi = failed = 0
    by_pred: Counter[str] = Counter()
    if info["present"]:
        reader = read_jsonl(path)
        for _, rec in reader:
            if rec.get("failed") is True:  # failed both turns (assemble_spec_demo.py keeps them)
                failed += 1
            elif rec.get("turn_2") is None:
                single += 1
            else:
                multi += 1
            by_pred[_io_pred(rec)] += 1
        info.update(records=single + multi + failed, bad_lines=len(reader.bad))
    return {"file": info, "total": info.get("records"), "single_turn": single,
            "multi_turn": multi, "failed": failed, "by_io_pred": _sorted(by_pred)}


# --- the whole report --------------------------------------------------------------------

def _rate(passed: int | None, total: int | None) -> dict:
    if passed is None or not total:
        return {"passed": passed, "total": total, "rate": None}
    return {"passed": passed, "total": total, "rate": round(passed / total, 4)}


def pass_rates(turn1: dict, turn2: dict) -> dict:
    """Pass rates per io_pred: turn 1, turn 2 (of the revised), and after both turns."""
    out: dict[str, dict] = {"turn_1": {}, "turn_2": {}, "after_turn_2": {}}
    keys = sorted(set(turn1["by_io_pred"]) | set(turn2["by_io_pred"]))
    for p in [*keys, "all"]:
        t1 = turn1 if p == "all" else turn1["by_io_pred"].get(p, {"total": 0, "success": 0})
        t2 = turn2 if p == "all" else turn2["by_io_pred"].get(p, {"total": 0, "success": 0})
        t1_ok = t1["success"] if turn1["file"]["present"] else None
        t2_ok = t2["success"] if turn2["file"]["present"] else None
        out["turn_1"][p] = _rate(t1_ok, t1["total"])
        out["turn_2"][p] = _rate(t2_ok, t2["total"])
        both = None if t1_ok is None else t1_ok + (t2_ok or 0)
        out["after_turn_2"][p] = _rate(both, t1["total"])
    return out


def _gap(before: int | None, after: int | None, accounted: int) -> int:
    """Records of the previous stage that no file accounts for (a step still running?)."""
    if before is None or after is None:
        return 0
    return max(0, before - after - accounted)


def funnel(r: dict) -> list[dict]:
    """Stages from raw files to final records, each with its count and drops by reason."""
    raw = r["files"]["raw_code"].get("records")
    msg = r["files"]["transform_msg"].get("records")
    uni, prs = r["inference"]["transform"], r["parse"]
    spec, t1, v1 = r["spec_msg"], r["inference"]["turn_1"], r["verify"]["turn_1"]
    rev, t2, v2 = r["rev_msg"], r["inference"]["turn_2"], r["verify"]["turn_2"]
    fin = r["final"]

    def not_success(v: dict) -> dict:
        return {k: n for k, n in v["statuses"].items() if k != status.SUCCESS}

    def with_gap(drops: dict, before: int | None, after: int | None, name: str) -> dict:
        gap = _gap(before, after, sum(drops.values()))
        return {**drops, name: gap} if gap else dict(drops)

    stages = [
        ("raw", "raw code files", "samples", raw, {}),
        ("transform_msg", "transform prompts", "samples", msg,
         with_gap({}, raw, msg, status.GAP_NOT_BUILT)),
        ("unified", "unified responses", "samples", uni["succeeded"],
         with_gap(uni["failed_by_reason"], msg, uni["succeeded"], status.GAP_NO_RESPONSE)),
        ("parsed", "parsed samples", "samples", prs["kept"],
         with_gap(prs["dropped_by_reason"], uni["succeeded"], prs["kept"], status.GAP_NO_PARSE_RECORD)),
        ("spec_msg", "prediction prompts", "predictions", spec["total"], {}),
        ("turn_1_answers", "turn-1 answers", "predictions", t1["succeeded"],
         with_gap(t1["failed_by_reason"], spec["total"], t1["succeeded"], status.GAP_NO_RESPONSE)),
        ("turn_1_passed", "turn-1 passed", "predictions", v1["success"],
         with_gap(not_success(v1), t1["succeeded"], v1["success"], status.GAP_NOT_VERIFIED)),
        ("rev_msg", "revision prompts", "predictions", rev["total"], {}),
        ("turn_2_answers", "turn-2 answers", "predictions", t2["succeeded"],
         with_gap(t2["failed_by_reason"], rev["total"], t2["succeeded"], status.GAP_NO_RESPONSE)),
        ("turn_2_passed", "turn-2 passed", "predictions", v2["success"],
         with_gap(not_success(v2), t2["succeeded"], v2["success"], status.GAP_NOT_VERIFIED)),
        ("final", "final records", "predictions", fin["total"],
         with_gap({}, v1["total"], fin["total"], status.GAP_NOT_IN_FINAL)),
    ]
    return [{"key": k, "stage": s, "unit": u, "count": c, "drops": _sorted(d)}
            for k, s, u, c, d in stages]


def build_report(files: RunFiles, prices_file: str | None = None,
                 batch_discount: float | None = None) -> dict:
    """Read every file of the run once and return the report as plain JSON data.

    Costs are at the prices of `prices_file` (default: the built-in table), batch answers less
    `batch_discount` when given (else less each entry's share); when either is given, the
    report's ``prices`` says so (``{"table", "batch_discount"}``, None where not given).
    """
    files = fill_sidecars(files)
    table = prices.load_table(prices_file, batch_discount)
    r: dict[str, Any] = {"files": {}}
    r["files"]["raw_code"] = count_records(files.raw_code)
    r["files"]["transform_msg"] = count_records(files.transform_msg)
    r["inference"] = {
        "transform": inference_stats(files.unified, files.unified_failed, table),
        "turn_1": inference_stats(files.gens, files.gens_failed, table),
        "turn_2": inference_stats(files.rev_gens, files.rev_gens_failed, table),
    }
    r["parse"] = parse_stats(files.parsed, files.parsed_dropped)
    r["spec_msg"] = messages_stats(files.spec_msg)
    r["verify"] = {"turn_1": verified_stats(files.verified),
                   "turn_2": verified_stats(files.rev_verified)}
    r["rev_msg"] = messages_stats(files.rev_msg)
    r["final"] = final_stats(files.final)
    # one flat list of every file, for the "files" table
    for name, info in (
        ("unified", r["inference"]["transform"]["output"]),
        ("unified_failed", r["inference"]["transform"]["failed_file"]),
        ("parsed", r["parse"]["parsed_file"]),
        ("parsed_dropped", r["parse"]["dropped_file"]),
        ("spec_msg", r["spec_msg"]["file"]),
        ("gens", r["inference"]["turn_1"]["output"]),
        ("gens_failed", r["inference"]["turn_1"]["failed_file"]),
        ("verified", r["verify"]["turn_1"]["file"]),
        ("rev_msg", r["rev_msg"]["file"]),
        ("rev_gens", r["inference"]["turn_2"]["output"]),
        ("rev_gens_failed", r["inference"]["turn_2"]["failed_file"]),
        ("rev_verified", r["verify"]["turn_2"]["file"]),
        ("final", r["final"]["file"]),
    ):
        r["files"][name] = info
    r["pass_rates"] = pass_rates(r["verify"]["turn_1"], r["verify"]["turn_2"])
    steps = r["inference"].values()
    r["inference_total"] = {"succeeded": sum(s["succeeded"] or 0 for s in steps)}
    for key in ("failed", "prompt_tokens", "completion_tokens", "total_tokens"):
        r["inference_total"][key] = sum(s[key] for s in steps)
    costs = [s["cost"] for s in steps if s["output"]["present"]]
    r["inference_total"]["cost"] = None if None in costs else sum(costs)
    r["funnel"] = funnel(r)
    if prices_file is not None or batch_discount is not None:
        r["prices"] = {"table": prices_file, "batch_discount": batch_discount}
    return r


# --- the funnel in a few lines (the end of scripts/run_pipeline.sh) ------------------------

# printed name -> key of the stage in `funnel`
FUNNEL_LINES = (("raw files", "raw"), ("unified", "unified"), ("parsed", "parsed"),
                ("prompts", "spec_msg"), ("turn-1 successes", "turn_1_passed"),
                ("turn-2 answers", "turn_2_answers"), ("turn-2 successes", "turn_2_passed"),
                ("final records", "final"))


def render_funnel(r: dict, replay: bool = False) -> str:
    """The funnel of a report in a few lines: the count of each stage (0 when absent), the
    failed requests of each inference step by reason, and where the final data is. With
    `replay` (the answers came from the replay server), a warning when it had no answer
    for some requests: the recorded answers do not match the prompts."""
    counts = {f["key"]: f["count"] for f in r["funnel"]}
    lines = ["funnel:", *(f"  {name:<17} {counts[key] or 0}" for name, key in FUNNEL_LINES)]
    steps = []
    for step, s in r["inference"].items():
        reasons = " ".join(f"{k}={v}" for k, v in s["failed_by_reason"].items())
        steps.append(f"{step.replace('_', ' ')} {s['failed']}"
                     + (f" ({reasons})" if reasons else ""))
    lines.append("failed requests: " + ", ".join(steps))
    unknown = sum(s["failed_by_reason"].get(status.FAIL_BAD_REQUEST, 0)
                  for s in r["inference"].values())
    if replay and unknown:
        lines.append(f"warning: the replay server had no recorded answer for {unknown} "
                     f"request(s): the answers do not match these prompts (for the demo, "
                     f"rebuild them: python data/demo/make_answers.py)")
    lines.append(f"final data: {r['files']['final']['path']}")
    return "\n".join(lines) + "\n"


# --- Markdown ------------------------------------------------------------------------------

STEP_NAMES = {"transform": "1.2 transform (unified)", "turn_1": "4 turn-1 predictions",
              "turn_2": "6.2 turn-2 revisions"}
ABSENT = "absent"


def _n(value: int | float | None) -> str:
    if value is None:
        return ABSENT
    if isinstance(value, float) and not value.is_integer():
        return f"{value:,.1f}"
    return f"{int(value):,}"


def _reasons(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{k} {v:,}" for k, v in counts.items()) or "-"


def _pct(rate: dict) -> str:
    if rate["rate"] is None:
        return "-" if rate["total"] == 0 else ABSENT
    return f"{100 * rate['rate']:.1f}% ({rate['passed']:,}/{rate['total']:,})"


def _table(header: list[str], rows: list[list[str]], right: set[int] = frozenset()) -> list[str]:
    align = ["---:" if i in right else "---" for i in range(len(header))]
    return ["| " + " | ".join(header) + " |", "| " + " | ".join(align) + " |",
            *("| " + " | ".join(r) + " |" for r in rows)]


def histogram_bins(hist: Mapping[str, int], max_rows: int = 12) -> list[tuple[str, int]]:
    """(label, count) rows; values grouped into ranges when there are too many to list."""
    values = sorted((int(k), v) for k, v in hist.items())
    if len(values) <= max_rows:
        return [(str(k), v) for k, v in values]
    lo, hi = values[0][0], values[-1][0]
    width = -(-(hi - lo + 1) // max_rows)
    rows: dict[int, int] = Counter()
    for k, v in values:
        rows[(k - lo) // width] += v
    out = []
    for b in range(max_rows):
        if rows.get(b):
            start = lo + b * width
            out.append((f"{start}-{start + width - 1}", rows[b]))
    return out


def _md_funnel(r: dict) -> list[str]:
    md = ["## Funnel", "",
          "Samples until parsing; one prediction per prompt from then on. "
          "Dropped: why records of the stage before did not reach this one.", ""]
    md += _table(["stage", "unit", "count", "dropped (by reason)"],
                 [[f["stage"], f["unit"], _n(f["count"]), _reasons(f["drops"])]
                  for f in r["funnel"]], right={2})
    pd = r["parse"]["pair_drops"]
    return md + ["", f"I/O pairs dropped inside samples (parse step): "
                     f"{_reasons(pd) if pd else 'none'}."]


def _md_pass_rates(r: dict) -> list[str]:
    md = ["## Pass rates", "",
          "Turn 2 counts only the revised predictions; 'after turn 2' is the share of all "
          "turn-1 predictions that passed in either turn.", ""]
    pr = r["pass_rates"]
    rows = [[IO_PRED_NAMES.get(p, p), _pct(pr["turn_1"][p]), _pct(pr["turn_2"][p]),
             _pct(pr["after_turn_2"][p])] for p in pr["turn_1"]]
    return md + _table(["prediction", "turn 1", "turn 2", "after turn 2"], rows, right={1, 2, 3})


def _md_statuses(r: dict) -> list[str]:
    cols = []  # (column name, status counts) per turn and io_pred
    for turn in ("turn_1", "turn_2"):
        for p, c in r["verify"][turn]["by_io_pred"].items():
            cols.append((f"{turn.replace('_', ' ')} {IO_PRED_NAMES.get(p, p).split()[0]}",
                         c["statuses"]))
    if not cols:
        return ["## Verifier statuses", "", "No verified file present."]

    def total(s: str) -> int:
        return sum(c.get(s, 0) for _, c in cols)

    statuses = sorted({s for _, c in cols for s in c},
                      key=lambda s: (s != status.SUCCESS, -total(s), s))
    rows = [[s, *(_n(c.get(s, 0)) for _, c in cols), _n(total(s))] for s in statuses]
    return ["## Verifier statuses", ""] + _table(
        ["status", *(name for name, _ in cols), "total"], rows,
        right=set(range(1, len(cols) + 2)))


def _md_inference(r: dict) -> list[str]:
    rows = []
    for key, s in r["inference"].items():
        if not s["output"]["present"] and not s["failed_file"]["present"]:
            rows.append([STEP_NAMES.get(key, key), ABSENT, *["-"] * 6])
            continue
        rows.append([STEP_NAMES.get(key, key), _n(s["succeeded"]), _n(s["failed"]),
                     _reasons(s["failed_by_reason"]), _n(s["prompt_tokens"]),
                     _n(s["completion_tokens"]), _n(s["total_tokens"]), _cost(s["cost"])])
    t = r["inference_total"]
    rows.append(["total", _n(t["succeeded"]), _n(t["failed"]), "", _n(t["prompt_tokens"]),
                 _n(t["completion_tokens"]), _n(t["total_tokens"]), _cost(t["cost"])])
    md = ["## Inference", ""] + _table(
        ["step", "succeeded", "failed", "failed by reason", "prompt tokens",
         "completion tokens", "total tokens", "cost"], rows, right={1, 2, 4, 5, 6, 7})
    priced = r.get("prices") or {}
    discount = priced.get("batch_discount")
    md += ["", f"Cost: the answers kept, at the prices of "
           f"{priced.get('table') or 'src/annoy_datasync/prices.yaml'} "
           "(\"-\": a model without a price), answers that came through a Batch API at the "
           "batch price"
           + ("" if discount is None else f" (the listed price less {discount:g} of it)")
           + "; the inference step's summary line also counts paid attempts that failed."]
    via = {k: s["via_batch"] for k, s in r["inference"].items() if s["via_batch"]}
    if via:
        md += ["", "Answered through a Batch API: "
               + ", ".join(f"{STEP_NAMES.get(k, k)} {v:,}" for k, v in via.items()) + "."]
    dup = {k: s["duplicates"] for k, s in r["inference"].items() if s["duplicates"]}
    if dup:
        md += ["", "Repeated request indices (counted once): "
               + ", ".join(f"{STEP_NAMES.get(k, k)} {v:,}" for k, v in dup.items()) + "."]
    return md


def _cost(x: float | None) -> str:
    return "-" if x is None else prices.dollars(x)


def _md_ios(r: dict) -> list[str]:
    io = r["parse"]["ios_per_sample"]
    md = ["## I/O pairs per sample", ""]
    if io["samples"]:
        md += [f"{io['samples']:,} samples, {io['pairs']:,} pairs: min {_n(io['min'])}, "
               f"median {_n(io['median'])}, mean {io['mean']:.1f}, max {_n(io['max'])}.", ""]
        md += _table(["pairs", "samples"],
                     [[k, _n(v)] for k, v in histogram_bins(io["histogram"])], right={1})
    else:
        md += ["No parsed samples."]
    if set(r["parse"]["categories"]) - {UNKNOWN}:
        md += ["", "Categories: " + _reasons(r["parse"]["categories"]) + "."]
    return md


def _md_final(r: dict) -> list[str]:
    fin = r["final"]
    if not fin["file"]["present"]:
        return ["## Final records", "", "No final file present."]
    failed = (f", {fin['failed']:,} failed in both (kept, as the method keeps them)"
              if fin["failed"] else "")
    by_pred = _reasons({IO_PRED_NAMES.get(k, k): v for k, v in fin["by_io_pred"].items()})
    return ["## Final records", "",
            f"{fin['total']:,} records: {fin['single_turn']:,} single-turn (turn 1 passed), "
            f"{fin['multi_turn']:,} passed in turn 2{failed}; by prediction: {by_pred}."]


def _md_files(r: dict) -> list[str]:
    rows = []
    for name, info in r["files"].items():
        if info["present"]:
            rows.append([name, f"`{info['path']}`", _n(info["records"]), _n(info["bad_lines"])])
        else:
            rows.append([name, f"`{info['path']}`" if info["path"] else "-", ABSENT, "-"])
    return ["## Files", ""] + _table(["file", "path", "records", "skipped lines"], rows,
                                     right={2, 3})


SECTIONS = (_md_funnel, _md_pass_rates, _md_statuses, _md_inference, _md_ios, _md_final,
            _md_files)


def render_markdown(r: dict, title: str = "Run report") -> str:
    """The report as Markdown: funnel, pass rates, verdicts, inference, I/O pairs, final
    records, files; one section per function in `SECTIONS`."""
    md = [f"# {title}"]
    for section in SECTIONS:
        md += ["", *section(r)]
    return "\n".join(md) + "\n"
