"""Benchmark of batched_api_inference.py against a local OpenAI-compatible server.

Measures, on this machine, with the server in its own process:
  1. the server alone (a raw keep-alive HTTP load generator), so we know it is not the limit,
     and the same requests sent with aiohttp directly, without the SDK: what the official
     client's own layer costs per request;
  2. our step script: requests/s at --in_flight requests in flight, server latency --latency;
  3. the original method: a multiprocessing pool of processes, each with a thread pool,
     a new synchronous OpenAI client per request; same server, same in-flight count;
  4. peak memory (sum of RSS of the step's processes) on a --mem_lines-line input, resumed
     with all but --mem_requests lines already answered: the run streams every input line,
     scans every output line and sends --mem_requests requests.

    python bench/bench_inference.py                 # a few minutes
    python bench/bench_inference.py --quick         # about a minute, smaller numbers
    python bench/bench_inference.py --pace_only     # only the two pacing benchmarks below

Pacing (``--pace_only``, or after the above unless ``--no_pace``):
  5. latency mix: --in_flight requests in flight against a server whose latency is drawn
     from a lognormal of mean 2 s capped at 20 s: the steady-state rate (between the
     moment the server has seen two waves and the moment it has seen the last request)
     as a fraction of in-flight / mean latency, and the step's CPU per request;
  6. rate limit: a server that allows --pace_rpm requests per minute (continuous refill,
     one second of burst, 429 with Retry-After and x-ratelimit-* headers), the step with
     --rpm, without it (learned from the headers), and against the same server without
     headers (the rate is inferred from 429s; 0.5 s latency): the
     sustained rate after the first minute as a fraction of the limit, and the share of
     requests answered 429 after it.

Numbers are ratios on a shared machine: rerun and compare medians.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.join(HERE, os.pardir, "src")
sys.path.insert(0, SRC)

from annoy_datasync.chat_server import ChatServer, Reply  # noqa: E402

SCRIPT = os.path.join(SRC, "batched_api_inference.py")


# --- the server, in its own process -----------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(port: int, latency: float) -> None:
    reply = Reply(content="The answer is 42.", delay=latency,
                  usage={"prompt_tokens": 20, "completion_tokens": 5, "total_tokens": 25})
    ChatServer(lambda req: reply, port=port, record=False).serve_forever()


class Server:
    def __init__(self, latency: float):
        self.port = free_port()
        self.proc = mp.get_context("fork").Process(target=_serve, args=(self.port, latency),
                                                   daemon=True)
        self.proc.start()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        self.url = f"http://127.0.0.1:{self.port}/v1"

    def stop(self) -> None:
        self.proc.kill()
        self.proc.join()


# --- 1. the server alone ------------------------------------------------------------------------
def _load(port: int, conns: int, total: int, out) -> None:
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]}).encode()
    request = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
               f"\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body
    left = [total]

    async def conn() -> None:
        r, w = await asyncio.open_connection("127.0.0.1", port)
        while left[0] > 0:
            left[0] -= 1
            w.write(request)
            head = await r.readuntil(b"\r\n\r\n")
            n = int(re.search(rb"Content-Length: (\d+)", head).group(1))
            await r.readexactly(n)
        w.close()

    async def main() -> float:
        t = time.perf_counter()
        await asyncio.gather(*(conn() for _ in range(conns)))
        return time.perf_counter() - t

    out.put(asyncio.run(main()))


def server_alone(url_port: int, conns: int, total: int) -> float:
    q = mp.get_context("fork").Queue()
    p = mp.get_context("fork").Process(target=_load, args=(url_port, conns, total, q))
    p.start()
    wall = q.get()
    p.join()
    return total / wall


# --- 1b. the same requests over aiohttp without the SDK (what the SDK layer costs) -----------
def _direct(url: str, inflight: int, n: int, out) -> None:
    import aiohttp

    async def main() -> tuple[int, float, float]:
        body = json.dumps({"model": "bench-model", "temperature": 0.7, "max_tokens": 4096,
                           "messages": [{"role": "user", "content": "what is 6 x 7?"}]}).encode()
        headers = {"Authorization": "Bearer EMPTY", "Content-Type": "application/json"}
        left, ok = [n], [0]
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=inflight)) as s:
            async def lane() -> None:
                while left[0] > 0:
                    left[0] -= 1
                    async with s.post(url + "/chat/completions", data=body, headers=headers) as r:
                        raw = await r.read()
                    if r.status == 200 and json.loads(raw)["choices"][0]["message"]["content"]:
                        ok[0] += 1
            t, c = time.perf_counter(), time.process_time()
            await asyncio.gather(*(lane() for _ in range(inflight)))
            return ok[0], time.perf_counter() - t, time.process_time() - c

    out.put(asyncio.run(main()))


def direct(url: str, nproc: int, inflight: int, total: int) -> dict:
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    procs = [ctx.Process(target=_direct, args=(url, inflight // nproc, total // nproc, q))
             for _ in range(nproc)]
    t = time.perf_counter()
    for p in procs:
        p.start()
    res = [q.get() for _ in procs]
    wall = time.perf_counter() - t
    for p in procs:
        p.join()
    ok = sum(r[0] for r in res)
    return {"rps": ok / wall, "cpu_ms": 1000 * sum(r[2] for r in res) / max(ok, 1)}


# --- 2. ours --------------------------------------------------------------------------------------
def write_input(path: str, n: int) -> None:
    with open(path, "w") as fh:
        for i in range(n):
            fh.write(json.dumps({"messages": [{"role": "user", "content": f"Question {i}: what is 6 x 7?"}],
                                 "itemid": i}) + "\n")


def tree_rss_kb(pid: int) -> int:
    """Sum of VmRSS of pid and its descendants."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/status") as fh:
                for line in fh:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
            with open(f"/proc/{p}/task/{p}/children") as fh:
                todo.extend(int(c) for c in fh.read().split())
        except (FileNotFoundError, ProcessLookupError):
            pass
    return total


def prefill(inp: str, out: str, n: int) -> None:
    """Answer the first n lines of inp in out, as a run killed late would have left it."""
    with open(inp) as src, open(out, "w") as dst:
        for i, line in zip(range(n), src):
            rec = json.loads(line)
            rec.update(output="The answer is 42.", model="bench-model", reasoning=None, index=i,
                       finish_reason="stop", usage={"prompt_tokens": 20, "completion_tokens": 5,
                                                    "total_tokens": 25})
            dst.write(json.dumps(rec) + "\n")


def ours(url: str, inp: str, out: str, nproc: int, nthread: int, keep: bool = False,
         transport: str = "auto") -> dict:
    for f in ((out + ".failed.jsonl",) if keep else (out, out + ".failed.jsonl")):
        if os.path.exists(f):
            os.unlink(f)
    cmd = [sys.executable, SCRIPT, "--input", inp, "--output", out, "--model", "bench-model",
           "--base_url", url, "--num_process", str(nproc), "--num_thread", str(nthread),
           "--no_progress", "--no_cache", "--transport", transport]
    t = time.perf_counter()
    before = os.times()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peak = [0]

    def watch() -> None:
        while proc.poll() is None:
            peak[0] = max(peak[0], tree_rss_kb(proc.pid))
            time.sleep(0.2)

    w = threading.Thread(target=watch, daemon=True)
    w.start()
    _, err = proc.communicate()
    wall = time.perf_counter() - t
    after = os.times()
    cpu = (after.children_user + after.children_system
           - before.children_user - before.children_system)
    w.join()
    m = re.search(r"succeeded=(\d+)", err)
    if proc.returncode != 0 or not m:
        raise SystemExit(f"step failed ({proc.returncode}):\n{err[-2000:]}")
    ok = int(m.group(1))
    return {"ok": ok, "wall": wall, "rps": ok / wall, "peak_mb": peak[0] / 1024,
            "cpu_ms": 1000 * cpu / max(ok, 1)}


# --- 3. the original method ----------------------------------------------------------------------
def _original_chunk(args: tuple) -> int:
    """One pool process: a thread pool, and a new client for every request."""
    import openai
    url, rows, nthread = args

    def one(row: dict) -> bool:
        try:  # like the original: a failed request is skipped
            client = openai.OpenAI(api_key="EMPTY", base_url=url)
            resp = client.chat.completions.create(model="bench-model", messages=row["messages"],
                                                  temperature=0.7, max_tokens=4096)
            return bool(resp.choices[0].message.content)
        except Exception as exc:  # noqa: BLE001
            errors.append(f"{type(exc).__name__}: {exc}"[:200])
            return False

    errors: list[str] = []

    with ThreadPoolExecutor(nthread) as pool:
        ok = sum(pool.map(one, rows))
    if errors:
        print(f"original: {len(errors)} failed requests, e.g. {errors[0]}", file=sys.stderr)
    return ok


def original(url: str, inp: str, nproc: int, nthread: int) -> dict:
    with open(inp) as fh:
        rows = [json.loads(line) for line in fh]           # it loads the whole input
    chunks = [(url, rows[i::nproc], nthread) for i in range(nproc)]
    t = time.perf_counter()
    with mp.get_context("fork").Pool(nproc) as pool:
        ok = sum(pool.map(_original_chunk, chunks))
    wall = time.perf_counter() - t
    return {"ok": ok, "wall": wall, "rps": ok / wall}


# --- 5, 6. pacing ----------------------------------------------------------------------------------
def run_step(url: str, inp: str, out: str, *extra: str) -> dict:
    """Our step as a subprocess: its wall time, CPU and summary line."""
    for f in (out, out + ".failed.jsonl"):
        if os.path.exists(f):
            os.unlink(f)
    cmd = [sys.executable, SCRIPT, "--input", inp, "--output", out, "--model", "bench-model",
           "--base_url", url, "--no_progress", "--no_cache", *extra]
    before = os.times()
    t = time.perf_counter()
    proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - t
    after = os.times()
    m = re.search(r"succeeded=(\d+)", proc.stderr)
    if proc.returncode != 0 or not m:
        raise SystemExit(f"step failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    cpu = after.children_user + after.children_system - before.children_user - before.children_system
    return {"ok": int(m.group(1)), "wall": wall, "cpu_ms": 1000 * cpu / max(int(m.group(1)), 1)}


def latency_mix(n: int, in_flight: int, tmp: str) -> None:
    import math
    import random
    mean, cap, sigma = 2.0, 20.0, 1.0
    mu = math.log(mean) - sigma ** 2 / 2
    rng = random.Random(7)
    delays = [min(cap, rng.lognormvariate(mu, sigma)) for _ in range(n + 10 * in_flight)]
    true_mean = sum(delays[:n]) / n

    def respond(req):
        return Reply(content="The answer is 42.", delay=delays[req.number],
                     usage={"prompt_tokens": 20, "completion_tokens": 5, "total_tokens": 25})

    server = ChatServer(respond).start()       # a thread of this process; the step is another
    try:
        inp = os.path.join(tmp, "mix.jsonl")
        write_input(inp, n)
        nproc = 2
        r = run_step(server.url, inp, os.path.join(tmp, "mix_out.jsonl"), "--num_process",
                     str(nproc), "--num_thread", str(in_flight // nproc))
        reqs = list(server.requests)
    finally:
        server.stop()
    arrivals = sorted(q.received for q in reqs)
    start, end = arrivals[min(len(arrivals) - 1, 2 * in_flight)], arrivals[-1]
    done_in = sum(1 for q in reqs if q.answered is not None and start <= q.answered <= end)
    steady = done_in / (end - start) if end > start else float("nan")
    # requests the server held on average in that interval (Little: rate x latency)
    held = sum(max(0.0, min(end, q.answered or end) - max(start, q.received))
               for q in reqs) / (end - start) if end > start else float("nan")
    ideal = in_flight / true_mean
    print(f"latency mix (lognormal, mean {true_mean:.2f} s, cap {cap:.0f} s), {in_flight} in flight, "
          f"{n} requests: steady state {steady:.0f} req/s = {100 * steady / ideal:.1f}% of the "
          f"ideal {ideal:.0f}, {held:.0f} held by the server on average; whole run {r['ok'] / r['wall']:.0f} req/s; "
          f"step CPU {r['cpu_ms']:.2f} ms/request")


def rate_limited(rpm: float, n: int, nthread: int, tmp: str) -> None:
    for label, extra, headers in (("--rpm given", ["--rpm", f"{rpm:g}"], True),
                                  ("learned from headers", [], True),
                                  ("no headers, no --rpm: inferred from 429s", [], False)):
        server = ChatServer(lambda req: Reply(content="The answer is 42.", delay=0.5),
                            rpm=rpm, limit_headers=headers).start()
        try:
            inp = os.path.join(tmp, "rl.jsonl")
            write_input(inp, n)
            r = run_step(server.url, inp, os.path.join(tmp, "rl_out.jsonl"),
                         "--num_thread", str(nthread), "--max_retries", "20", *extra)
            reqs = list(server.requests)
        finally:
            server.stop()
        t0 = min(q.received for q in reqs)
        late = [q for q in reqs if q.received >= t0 + 60]
        ok_late = [q for q in late if q.status == 200]
        rejected_late = sum(1 for q in late if q.status == 429)
        last = max(q.answered for q in ok_late) if ok_late else t0 + 60
        rate = len(ok_late) / (last - t0 - 60) if last > t0 + 60 else float("nan")
        limit = rpm / 60
        print(f"rate limit {rpm:g}/min ({label}), {nthread} in flight, {n} requests: after the "
              f"first minute {rate:.2f} req/s = {100 * rate / limit:.1f}% of the limit, "
              f"429s {rejected_late}/{len(late)} = {100 * rejected_late / max(len(late), 1):.2f}%; "
              f"429s in the first minute {sum(1 for q in reqs if q.status == 429) - rejected_late}; "
              f"wall {r['wall']:.0f} s")


# --- main ------------------------------------------------------------------------------------------
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--latency", type=float, default=0.2)
    p.add_argument("--in_flight", type=int, default=1000)
    p.add_argument("--requests", type=int, default=10000, help="requests per run of ours")
    p.add_argument("--baseline_requests", type=int, default=2000, help="requests of the original")
    p.add_argument("--mem_requests", type=int, default=20000,
                   help="requests actually sent in the memory run")
    p.add_argument("--mem_lines", type=int, default=1_000_000, help="lines of the memory run (0: skip)")
    p.add_argument("--configs", default="1x1000,2x500,2x500:httpx",
                   help="our num_process x num_thread[:transport] settings to try")
    p.add_argument("--quick", action="store_true", help="small numbers, about a minute")
    p.add_argument("--memory_only", action="store_true", help="only the memory run")
    p.add_argument("--pace_only", action="store_true", help="only the pacing benchmarks")
    p.add_argument("--no_pace", action="store_true", help="skip the pacing benchmarks")
    p.add_argument("--mix_requests", type=int, default=20000,
                   help="requests of the latency-mix run (pacing benchmark 5; 0: skip it)")
    p.add_argument("--pace_rpm", type=float, default=600, help="limit of benchmark 6")
    p.add_argument("--pace_requests", type=int, default=1500, help="requests of benchmark 6")
    p.add_argument("--pace_threads", type=int, default=64, help="--num_thread of benchmark 6")
    a = p.parse_args()
    if a.quick:
        a.requests, a.baseline_requests, a.mem_requests = 3000, 1000, 5000
        a.mem_lines = min(a.mem_lines, 100_000)
    ideal = a.in_flight / a.latency
    tmp = tempfile.mkdtemp(prefix="bench_inference_")
    rows = []

    if a.memory_only:
        memory_run(a, tmp)
        return
    if a.pace_only:
        pacing(a, tmp)
        return
    server = Server(a.latency)
    try:
        rps = server_alone(server.port, a.in_flight, a.requests)
        rows.append(("server alone (raw HTTP client)", f"{a.in_flight}", rps, ""))
        inp = os.path.join(tmp, "in.jsonl")
        write_input(inp, a.requests)
        ours_best = 0.0
        for cfg in a.configs.split(","):
            shape, _, transport = cfg.partition(":")
            nproc, nthread = map(int, shape.split("x"))
            r = ours(server.url, inp, os.path.join(tmp, "out.jsonl"), nproc, nthread,
                     transport=transport or "auto")
            if not transport:
                ours_best = max(ours_best, r["rps"])
            rows.append((f"ours {nproc} proc x {nthread} ({transport or 'default'})",
                         f"{nproc * nthread}", r["rps"],
                         f"{r['cpu_ms']:.2f} ms CPU/req, peak {r['peak_mb']:.0f} MB"))
        d = direct(server.url, 2, a.in_flight, a.requests)
        rows.append(("aiohttp alone, no SDK (2 proc, not ours)", f"{a.in_flight}", d["rps"],
                     f"{d['cpu_ms']:.2f} ms CPU/req: the floor without the SDK"))
        binp = os.path.join(tmp, "base.jsonl")
        write_input(binp, a.baseline_requests)
        nproc = 10
        b = original(server.url, binp, nproc, a.in_flight // nproc)
        rows.append((f"original {nproc} proc x {a.in_flight // nproc} threads",
                     f"{a.in_flight}", b["rps"], f"ok {b['ok']}/{a.baseline_requests}"))
    finally:
        server.stop()

    small = 100
    server = Server(a.latency)
    try:
        r = ours(server.url, inp, os.path.join(tmp, "out.jsonl"), 1, small)
        rows.append((f"ours 1 proc x {small}", f"{small}", r["rps"],
                     f"{r['cpu_ms']:.2f} ms CPU/req, ideal {small / a.latency:.0f}/s"))
        small_pct = 100 * r["rps"] / (small / a.latency)
    finally:
        server.stop()

    print(f"\nlatency {a.latency * 1000:.0f} ms, ideal at {a.in_flight} in flight = {ideal:.0f} req/s,"
          f" {os.cpu_count()} CPUs (shared)")
    print(f"{'what':42} {'in flight':>9} {'req/s':>8} {'% ideal':>8}  note")
    for name, fl, rps, note in rows:
        print(f"{name:42} {fl:>9} {rps:8.0f} {100 * rps / (int(fl) / a.latency):7.1f}%  {note}")
    print(f"ours / original at {a.in_flight} in flight: {ours_best / b['rps']:.1f}x")
    httpx_rows = [r for r in rows if r[0].endswith("(httpx)")]
    if httpx_rows:
        print(f"ours default / ours over httpx: {ours_best / max(r[2] for r in httpx_rows):.1f}x")
    print(f"ours at {small} in flight: {small_pct:.0f}% of ideal")
    if not a.no_pace:
        pacing(a, tmp, cleanup=False)
    memory_run(a, tmp)


def pacing(a: argparse.Namespace, tmp: str, cleanup: bool = True) -> None:
    if a.mix_requests:
        latency_mix(a.mix_requests, a.in_flight, tmp)
    rate_limited(a.pace_rpm, a.pace_requests, a.pace_threads, tmp)
    if cleanup:
        subprocess.run(["rm", "-rf", tmp])


def memory_run(a: argparse.Namespace, tmp: str) -> None:
    mem = None
    if a.mem_lines:
        server = Server(0.0)
        try:
            minp = os.path.join(tmp, "mem.jsonl")
            write_input(minp, a.mem_lines)
            mout = os.path.join(tmp, "mem_out.jsonl")
            prefill(minp, mout, a.mem_lines - a.mem_requests)
            mem = ours(server.url, minp, mout, 2, 256, keep=True)
        finally:
            server.stop()
    if mem:
        print(f"memory: {a.mem_lines:,}-line input, {a.mem_requests:,} sent (the rest resumed), "
              f"2 proc x 256, zero latency: peak RSS of all its processes "
              f"{mem['peak_mb']:.0f} MB, {mem['wall']:.0f} s")
    subprocess.run(["rm", "-rf", tmp])


if __name__ == "__main__":
    main()
