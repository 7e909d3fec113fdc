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
           "--no_progress", "--transport", transport]
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
    memory_run(a, tmp)


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
