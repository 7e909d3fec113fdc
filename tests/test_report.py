"""report.py: the numbers of the report against counts taken directly from the files."""

from __future__ import annotations

import json
import shutil
import statistics
import struct
import tracemalloc
from collections import Counter
from pathlib import Path

import pytest

import report
from annoy_datasync import cli, prices
from annoy_datasync import report as rep
from annoy_datasync.jsonl import InputError
from testutil import FIXTURES

FIX = FIXTURES / "report_run"
# flag -> fixture file (the side files are found next to their main file)
FILES = {
    "--raw_code_file": "rawcode_fix.jsonl",
    "--raw_code_msg_file": "rawcode_fix_msg.jsonl",
    "--unified_file": "rawcode_fix_unified.jsonl",
    "--parsed_file": "rawcode_fix_parsed.jsonl",
    "--spec_msg_file": "spec_fix_msg.jsonl",
    "--gens_file": "spec_fix_gens.jsonl",
    "--verified_file": "spec_fix_gens_verified.jsonl",
    "--rev_msg_file": "spec_fix_msg_rev.jsonl",
    "--rev_gens_file": "spec_fix_gens_rev.jsonl",
    "--rev_verified_file": "spec_fix_gens_rev_verified.jsonl",
    "--final_file": "spec_fix_final.jsonl",
}


def records(name: str) -> list[dict]:
    """Plain reading, independent of the library: every line that parses."""
    out = []
    for line in (FIX / name).read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            pass
    return out


def run(tmp_path: Path, directory: Path = FIX, extra: list[str] = ()) -> tuple[dict, str]:
    argv = [x for flag, name in FILES.items() for x in (flag, str(directory / name))]
    md, js = tmp_path / "report.md", tmp_path / "report.json"
    argv += ["--output_md", str(md), "--output_json", str(js), "--quiet", *extra]
    assert report.main(argv) == 0
    return json.loads(js.read_text()), md.read_text()


def inference_expect(output: str, failed: str) -> tuple[int, Counter, dict]:
    outs = records(output)
    done = {r["index"] for r in outs}
    last_reason = {}
    for r in records(failed):
        if r["index"] not in done:
            last_reason[r["index"]] = r["reason"]
    tokens = Counter()
    for r in outs:
        tokens.update({k: r["usage"][k] for k in ("prompt_tokens", "completion_tokens")})
    return len(done), Counter(last_reason.values()), tokens


def test_inference_counts_agree_with_files(tmp_path):
    r, _ = run(tmp_path)
    total_ok = total_failed = total_prompt = total_completion = 0
    for step, out, failed in (("transform", "rawcode_fix_unified.jsonl", "rawcode_fix_unified.jsonl.failed.jsonl"),
                              ("turn_1", "spec_fix_gens.jsonl", "spec_fix_gens.jsonl.failed.jsonl"),
                              ("turn_2", "spec_fix_gens_rev.jsonl", "spec_fix_gens_rev.jsonl.failed.jsonl")):
        ok, failures, tokens = inference_expect(out, failed)
        got = r["inference"][step]
        assert got["succeeded"] == ok
        assert got["failed_by_reason"] == dict(failures)
        assert got["failed"] == sum(failures.values())
        assert got["prompt_tokens"] == tokens["prompt_tokens"]
        assert got["completion_tokens"] == tokens["completion_tokens"]
        total_ok += ok
        total_failed += sum(failures.values())
        total_prompt += tokens["prompt_tokens"]
        total_completion += tokens["completion_tokens"]
    assert r["inference_total"]["succeeded"] == total_ok
    assert r["inference_total"]["failed"] == total_failed
    assert r["inference_total"]["prompt_tokens"] == total_prompt
    assert r["inference_total"]["completion_tokens"] == total_completion
    # the fixture has a failure (index 5) that a rerun later answered: not a failure
    assert 5 in {x["index"] for x in records("rawcode_fix_unified.jsonl.failed.jsonl")}
    assert r["inference"]["transform"]["failed"] < len(records("rawcode_fix_unified.jsonl.failed.jsonl"))
    # and a torn last line in the turn-2 answers, skipped and reported
    assert r["files"]["rev_gens"]["bad_lines"] == 1


def test_parse_counts_and_pairs_per_sample(tmp_path):
    r, md = run(tmp_path)
    parsed, dropped = records("rawcode_fix_parsed.jsonl"), records("rawcode_fix_parsed.jsonl.dropped.jsonl")
    p = r["parse"]
    assert p["kept"] == len(parsed)
    assert p["dropped_by_reason"] == dict(Counter(d["reason"] for d in dropped))
    pair_drops = Counter()
    for x in parsed:
        pair_drops.update(x["meta"]["pair_drops"])
    for d in dropped:
        pair_drops.update(d["pair_drops"])
    assert p["pair_drops"] == dict(pair_drops)
    sizes = [len(x["ios"]) for x in parsed]
    io = p["ios_per_sample"]
    assert (io["min"], io["max"], io["pairs"]) == (min(sizes), max(sizes), sum(sizes))
    assert io["median"] == statistics.median(sizes)
    assert io["histogram"] == {str(k): v for k, v in sorted(Counter(sizes).items())}
    assert f"min {min(sizes)}, median {statistics.median(sizes)}" in md


def test_verdicts_and_pass_rates(tmp_path):
    r, md = run(tmp_path)
    for turn, name in (("turn_1", "spec_fix_gens_verified.jsonl"),
                       ("turn_2", "spec_fix_gens_rev_verified.jsonl")):
        recs = records(name)
        v = r["verify"][turn]
        assert v["statuses"] == dict(Counter(x["res"]["status"] for x in recs))
        for pred in ("i", "o"):
            mine = [x for x in recs if x["io_pred"] == pred]
            ok = sum(x["res"]["status"] == "success" for x in mine)
            assert v["by_io_pred"][pred]["total"] == len(mine)
            assert v["by_io_pred"][pred]["success"] == ok
            rate = r["pass_rates"][turn][pred]
            assert (rate["passed"], rate["total"]) == (ok, len(mine))
            assert rate["rate"] == pytest.approx(ok / len(mine), abs=1e-4)
    t1, t2 = records("spec_fix_gens_verified.jsonl"), records("spec_fix_gens_rev_verified.jsonl")
    passed_either = sum(x["res"]["status"] == "success" for x in t1 + t2)
    assert r["pass_rates"]["after_turn_2"]["all"]["passed"] == passed_either
    assert r["pass_rates"]["after_turn_2"]["all"]["total"] == len(t1)
    # the Markdown shows the same numbers
    i1 = [x for x in t1 if x["io_pred"] == "i"]
    ok = sum(x["res"]["status"] == "success" for x in i1)
    assert f"{100 * ok / len(i1):.1f}% ({ok}/{len(i1)})" in md


def test_funnel_counts_each_stage_from_its_file(tmp_path):
    r, md = run(tmp_path)
    f = {s["key"]: s for s in r["funnel"]}
    ver, rver = records("spec_fix_gens_verified.jsonl"), records("spec_fix_gens_rev_verified.jsonl")
    final = records("spec_fix_final.jsonl")
    expect = {
        "raw": len(records("rawcode_fix.jsonl")),
        "transform_msg": len(records("rawcode_fix_msg.jsonl")),
        "unified": len(records("rawcode_fix_unified.jsonl")),
        "parsed": len(records("rawcode_fix_parsed.jsonl")),
        "spec_msg": len(records("spec_fix_msg.jsonl")),
        "turn_1_answers": len(records("spec_fix_gens.jsonl")),
        "turn_1_passed": sum(x["res"]["status"] == "success" for x in ver),
        "rev_msg": len(records("spec_fix_msg_rev.jsonl")),
        "turn_2_answers": len(records("spec_fix_gens_rev.jsonl")),
        "turn_2_passed": sum(x["res"]["status"] == "success" for x in rver),
        "final": len(final),
    }
    assert {k: s["count"] for k, s in f.items()} == expect
    # drops at a step are the reasons of that step's side file / verdicts
    assert f["parsed"]["drops"] == dict(Counter(d["reason"] for d in records("rawcode_fix_parsed.jsonl.dropped.jsonl")))
    assert f["turn_1_passed"]["drops"] == dict(Counter(x["res"]["status"] for x in ver
                                                       if x["res"]["status"] != "success"))
    assert f["turn_2_answers"]["drops"] == {"rate_limited": 1}
    assert r["final"]["single_turn"] == sum(x["turn_2"] is None for x in final)
    assert r["final"]["multi_turn"] == sum(x["turn_2"] is not None for x in final)
    assert f"| parsed samples | samples | {expect['parsed']} |" in md


def test_funnel_of_a_report_prints_the_drivers_summary(tmp_path, capsys):
    run(tmp_path)
    capsys.readouterr()
    assert report.main(["--funnel_of", str(tmp_path / "report.json")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "funnel:"
    rows = dict(line.rsplit(None, 1) for line in lines[1:9])
    rver = records("spec_fix_gens_rev_verified.jsonl")
    assert {k.strip(): int(v) for k, v in rows.items()} == {
        "raw files": len(records("rawcode_fix.jsonl")),
        "unified": len({r["index"] for r in records("rawcode_fix_unified.jsonl")}),
        "parsed": len(records("rawcode_fix_parsed.jsonl")),
        "prompts": len(records("spec_fix_msg.jsonl")),
        "turn-1 successes": sum(x["res"]["status"] == "success"
                                for x in records("spec_fix_gens_verified.jsonl")),
        "turn-2 answers": len(records("spec_fix_gens_rev.jsonl")),
        "turn-2 successes": sum(x["res"]["status"] == "success" for x in rver),
        "final records": len(records("spec_fix_final.jsonl")),
    }
    failed = []
    for step, name in (("transform", "rawcode_fix_unified.jsonl"), ("turn 1", "spec_fix_gens.jsonl"),
                       ("turn 2", "spec_fix_gens_rev.jsonl")):
        _, reasons, _ = inference_expect(name, name + ".failed.jsonl")
        text = " ".join(f"{k}={v}" for k, v in sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0])))
        failed.append(f"{step} {sum(reasons.values())}" + (f" ({text})" if text else ""))
    assert lines[9] == "failed requests: " + ", ".join(failed)
    assert lines[10:] == [f"final data: {FIX / 'spec_fix_final.jsonl'}"]
    # only a replayed run whose server lacked answers (bad_request) gets the warning
    r = json.loads((tmp_path / "report.json").read_text())
    assert "warning" not in rep.render_funnel(r, replay=True)
    r["inference"]["turn_1"]["failed_by_reason"]["bad_request"] = 2
    assert "warning" not in rep.render_funnel(r, replay=False)
    assert ("warning: the replay server had no recorded answer for 2 request(s)"
            in rep.render_funnel(r, replay=True))
    with pytest.raises(SystemExit):
        report.main(["--replay"])   # only with --funnel_of
    with pytest.raises(InputError, match="none.json: no report to read"):
        report.main(["--funnel_of", str(tmp_path / "none.json")])


@pytest.mark.parametrize("content", ['{"a": 1}', "[1, 2]", '{"funnel": [], "inference": {}}',
                                     '{"funnel": [{"key": "raw"}], "inference": {}, "files": {}}'])
def test_funnel_of_a_json_file_that_is_not_a_report_is_one_error_line(tmp_path, capsys, content):
    (tmp_path / "other.json").write_text(content)
    rc = cli.run(report.main, ["--funnel_of", str(tmp_path / "other.json")])
    assert rc == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: {tmp_path / 'other.json'}: not a report of src/report.py")
    assert len(err.splitlines()) == 1


def test_missing_files_are_reported_absent(tmp_path, capsys):
    part = tmp_path / "run"
    part.mkdir()
    for name in ("rawcode_fix.jsonl", "rawcode_fix_unified.jsonl", "spec_fix_gens_verified.jsonl"):
        shutil.copy(FIX / name, part / name)
    r, md = run(tmp_path, part)
    files = r["files"]
    assert files["raw_code"]["present"] and files["unified"]["present"]
    for name in ("transform_msg", "unified_failed", "parsed", "parsed_dropped", "gens",
                 "rev_verified", "final"):
        assert files[name]["present"] is False, name
    f = {s["key"]: s["count"] for s in r["funnel"]}
    assert f["raw"] == 14 and f["parsed"] is None and f["final"] is None
    assert f["turn_1_passed"] == sum(x["res"]["status"] == "success"
                                     for x in records("spec_fix_gens_verified.jsonl"))
    assert r["pass_rates"]["turn_2"]["all"]["rate"] is None
    assert "| parsed samples | samples | absent |" in md
    assert "| final | `" in md and "| absent |" in md


def test_nothing_there_at_all(tmp_path):
    r, md = run(tmp_path, tmp_path / "nowhere")
    assert not any(info["present"] for info in r["files"].values())
    assert all(s["count"] is None for s in r["funnel"])
    assert "No parsed samples." in md


def test_failed_file_found_under_either_name(tmp_path):
    d = tmp_path / "run"
    shutil.copytree(FIX, d)
    (d / "spec_fix_gens.jsonl.failed.jsonl").rename(d / "spec_fix_gens.failed.jsonl")
    r, _ = run(tmp_path, d)
    assert r["files"]["gens_failed"]["path"].endswith("/spec_fix_gens.failed.jsonl")
    assert r["inference"]["turn_1"]["failed_by_reason"] == {"length": 1}


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_figure_is_a_png_of_sensible_size(tmp_path):
    fig = tmp_path / "figs" / "run.png"
    run(tmp_path, extra=["--figure", str(fig), "--title", "Fixture run"])
    width, height = png_size(fig)
    assert 800 <= width <= 3000 and 400 <= height <= 2000
    assert fig.stat().st_size > 20_000  # bars and text, not an empty canvas
    assert not list(fig.parent.glob("*.tmp*"))


def test_a_rewritten_report_keeps_its_mode_and_leaves_no_temp_file(tmp_path):
    # every whole-file writer goes through jsonl.atomic_text: a rerun keeps the mode the
    # user gave the old files (a plain write-and-rename gave them the umask's)
    fig = tmp_path / "run.png"
    run(tmp_path, extra=["--figure", str(fig)])
    for f in (tmp_path / "report.md", tmp_path / "report.json", fig):
        f.chmod(0o640)
    run(tmp_path, extra=["--figure", str(fig)])
    for f in (tmp_path / "report.md", tmp_path / "report.json", fig):
        assert f.stat().st_mode & 0o777 == 0o640, f.name
    png_size(fig)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json", "report.md", "run.png"]


def test_printed_markdown_and_summary(tmp_path, capsys):
    argv = [x for flag, name in FILES.items() for x in (flag, str(FIX / name))]
    argv += ["--output_md", str(tmp_path / "r.md"), "--output_json", str(tmp_path / "r.json")]
    assert report.main(argv) == 0
    out, err = capsys.readouterr()
    assert out.strip() == (tmp_path / "r.md").read_text().strip()
    assert "report: files_read=15 final_records=10" in err


def test_memory_stays_flat_on_a_large_file(tmp_path):
    path = tmp_path / "verified.jsonl"
    pad = "x" * 400
    with path.open("w") as fh:
        for i in range(12_000):
            fh.write(json.dumps({"index": i, "io_pred": "io"[i % 2], "output": pad,
                                 "usage": {"prompt_tokens": 3, "completion_tokens": 4},
                                 "res": {"status": "success" if i % 3 else "wrong_answer",
                                         "message": pad}}) + "\n")
    size = path.stat().st_size
    tracemalloc.start()
    try:
        v = rep.verified_stats(str(path))
        s = rep.inference_stats(str(path), None)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert v["total"] == 12_000 and v["success"] == 8_000
    assert s["prompt_tokens"] == 36_000
    assert size > 10_000_000 and peak < size / 10


def test_histogram_median_and_bins():
    assert rep._median_of_histogram({1: 1, 3: 1}) == 2
    assert rep._median_of_histogram({5: 3, 9: 1}) == 5
    assert rep._median_of_histogram({}) is None
    assert rep.histogram_bins({str(k): 1 for k in range(30)}, max_rows=5)[0] == ("0-5", 6)


def test_run_dir_and_name_find_the_readme_names(tmp_path):
    explicit, _ = run(tmp_path)
    out = tmp_path / "by_name"
    assert report.main(["--run_dir", str(FIX), "--name", "fix", "--quiet",
                        "--output_md", str(out / "r.md"), "--output_json", str(out / "r.json")]) == 0
    assert json.loads((out / "r.json").read_text()) == explicit
    for bad in (["--run_dir", str(FIX)], ["--figure", str(tmp_path / "f.pdf")]):
        with pytest.raises(SystemExit) as exc:
            report.main(bad)
        assert exc.value.code == 2


def test_inference_cost_per_step_and_total(tmp_path):
    """Cost = tokens x the price table's prices, by the model of each answer."""
    from annoy_datasync.report import inference_stats
    out = tmp_path / "gens.jsonl"
    rows = [{"index": 0, "model": "gpt-4o-mini", "output": "a",
             "usage": {"prompt_tokens": 1_000_000, "completion_tokens": 200_000,
                       "cached_tokens": 400_000}},
            {"index": 1, "model": "deepseek-chat", "output": "b",
             "usage": {"prompt_tokens": 300_000, "completion_tokens": 100_000}},
            {"index": 1, "model": "deepseek-chat", "output": "again",   # a duplicate: once
             "usage": {"prompt_tokens": 300_000, "completion_tokens": 100_000}}]
    out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    s = inference_stats(str(out), None)
    expected = (600_000 * 0.15 + 400_000 * 0.075 + 200_000 * 0.60) / 1e6 \
        + (300_000 * 0.27 + 100_000 * 1.10) / 1e6
    assert s["cost"] == pytest.approx(expected)
    out.write_text(json.dumps({"index": 0, "model": "my-own-model",
                               "usage": {"prompt_tokens": 5, "completion_tokens": 5}}) + "\n")
    assert inference_stats(str(out), None)["cost"] is None


def test_rows_answered_through_a_batch_cost_the_batch_price(tmp_path):
    """``usage.batch`` (written by the batch mode) prices a row at the table's price less its
    batch discount (0.5 unless the entry says otherwise); rows of the live mode pay in full."""
    from annoy_datasync.report import inference_stats
    out = tmp_path / "gens.jsonl"
    batch = {"prompt_tokens": 1_000_000, "completion_tokens": 200_000, "cached_tokens": 400_000,
             "batch": True}
    live = {"prompt_tokens": 300_000, "completion_tokens": 100_000}
    rows = [{"index": 0, "model": "gpt-4o-mini", "output": "a", "usage": batch},
            {"index": 1, "model": "gpt-4o-mini", "output": "b", "usage": live},
            {"index": 2, "model": "gpt-4.1", "output": "c", "usage": {**live, "batch": True}}]
    out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    s = inference_stats(str(out), None)
    # gpt-4o-mini $0.15 / $0.075 cached / $0.60; gpt-4.1 $2.00 / $8.00; batch: half of each
    expected = (600_000 * 0.075 + 400_000 * 0.0375 + 200_000 * 0.30) / 1e6 \
        + (300_000 * 0.15 + 100_000 * 0.60) / 1e6 \
        + (300_000 * 1.00 + 100_000 * 4.00) / 1e6
    assert s["cost"] == pytest.approx(expected) and s["via_batch"] == 2
    r = rep.build_report(rep.RunFiles(gens=str(out)))
    assert r["inference_total"]["cost"] == pytest.approx(expected)
    md = rep.render_markdown(r)
    assert "| 4 turn-1 predictions | 3 |" in md and prices.dollars(expected) in md
    assert "Answered through a Batch API: 4 turn-1 predictions 2." in md


def test_a_model_without_a_batch_api_costs_the_full_price_in_a_batch(tmp_path, caplog):
    """DeepSeek has no Batch API: rows of its models marked ``usage.batch`` (another host's
    batch endpoint serving them) are priced at the full rate, and the report says so."""
    from annoy_datasync.report import inference_stats
    out = tmp_path / "gens.jsonl"
    usage = {"prompt_tokens": 300_000, "completion_tokens": 100_000, "batch": True}
    out.write_text(json.dumps({"index": 0, "model": "deepseek-chat", "output": "a",
                               "usage": usage}) + "\n")
    assert inference_stats(str(out), None)["cost"] == pytest.approx(
        (300_000 * 0.27 + 100_000 * 1.10) / 1e6)
    assert "deepseek-chat" in caplog.text and "full price" in caplog.text


def test_a_run_priced_by_its_own_table_and_batch_discount(tmp_path, capsys):
    """--prices FILE and --batch_discount F, as batched_api_inference.py takes them: the cost
    is tokens x that table's prices, batch rows less F (else less the entry's share); the
    report names the table and the share it used."""
    gens = tmp_path / "spec_x_gens.jsonl"
    batch = {"prompt_tokens": 1_000_000, "completion_tokens": 200_000, "cached_tokens": 400_000,
             "batch": True}
    live = {"prompt_tokens": 300_000, "completion_tokens": 100_000}
    gens.write_text("".join(json.dumps({"index": i, "model": "my-model", "output": "a",
                                        "usage": u}) + "\n" for i, u in enumerate((batch, live))))
    table = tmp_path / "my_prices.yaml"
    table.write_text("my-model: {input: 3, cached_input: 1, output: 12, batch_discount: 0.4}\n")
    full_batch = (600_000 * 3 + 400_000 * 1 + 200_000 * 12) / 1e6
    full_live = (300_000 * 3 + 100_000 * 12) / 1e6

    def cost(*flags):
        assert report.main(["--run_dir", str(tmp_path), "--name", "x", "--quiet", *flags]) == 0
        r = json.loads((tmp_path / "report.json").read_text())
        return r, r["inference"]["turn_1"]["cost"], (tmp_path / "report.md").read_text()

    r, got, md = cost()
    assert got is None and "prices" not in r            # my-model is not in the built-in table
    r, got, md = cost("--prices", str(table))
    assert got == pytest.approx(full_batch * 0.6 + full_live)
    assert r["prices"] == {"table": str(table), "batch_discount": None}
    assert f"at the prices of {table}" in md
    r, got, md = cost("--prices", str(table), "--batch_discount", "0.25")
    assert got == pytest.approx(full_batch * 0.75 + full_live)
    assert r["prices"] == {"table": str(table), "batch_discount": 0.25}
    assert "batch price (the listed price less 0.25 of it)" in md
    for bad in (["--batch_discount", "1.5"], ["--batch_discount", "-0.1"]):
        with pytest.raises(SystemExit) as exc:
            report.main(["--run_dir", str(tmp_path), "--name", "x", "--quiet", *bad])
        assert exc.value.code == 2
    capsys.readouterr()
    assert report.cli.run(report.main, ["--run_dir", str(tmp_path), "--name", "x", "--quiet",
                                        "--prices", str(tmp_path / "none.yaml")]) == 1
    assert "none.yaml: no such price table file" in capsys.readouterr().err
