"""Serve recorded model answers as an OpenAI-compatible API on 127.0.0.1 (no API key needed).

In:  --answers FILE [FILE ...]: JSONL of {"messages", "output", "reasoning"?, "finish_reason"?};
     the output file of an earlier batched_api_inference.py run works as it is.
Out: POST /v1/chat/completions answers a request whose messages were recorded; any other
     request gets HTTP 400 (the inference client records it as a failed request).
     With --port 0 (the default) a free port is chosen; --port_file receives it once the
     server listens. Runs until SIGTERM or Ctrl-C, then prints one summary line.

Example: python src/replay_server.py --answers data/demo/answers.jsonl --port 8765
         python src/batched_api_inference.py --base_url http://127.0.0.1:8765/v1 ...
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading

from annoy_datasync import cli
from annoy_datasync.chat_server import ChatServer
from annoy_datasync.jsonl import atomic_text
from annoy_datasync.replay import load_answers, make_responder


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def build_parser() -> argparse.ArgumentParser:
    p = cli.new_parser(__doc__)
    p.add_argument("--answers", nargs="+", required=True, metavar="FILE",
                   help="recorded answers (JSONL); several files are merged")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0 picks a free port (default)")
    p.add_argument("--port_file", help="write the bound port here (atomically) once listening")
    p.add_argument("--model", default="replay", help="model name listed by GET /v1/models")
    p.add_argument("--exit_with_pid", type=int, metavar="PID",
                   help="also stop when process PID is gone (so a killed launcher never "
                        "leaves the server behind)")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not 0 <= args.port < 65536:
        parser.error(f"--port {args.port}: should be 0..65535")

    book = load_answers(args.answers)
    if not len(book):
        parser.error(f"{', '.join(args.answers)}: no usable recorded answer (no line with messages and output)")
    server = ChatServer(make_responder(book), host=args.host, port=args.port, record=False,
                        models=[args.model])
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda *_: stop.set())
    watch_parent = args.exit_with_pid is not None and os.getppid() == args.exit_with_pid
    server.start()
    try:
        if args.port_file:
            with atomic_text(args.port_file) as fh:   # a reader never sees an empty port
                fh.write(f"{server.port}\n")
        print(f"replay server: {len(book)} recorded requests on {server.url}", file=sys.stderr,
              flush=True)
        while not stop.wait(0.5):
            gone = args.exit_with_pid is not None and (
                not _alive(args.exit_with_pid) or (watch_parent and os.getppid() != args.exit_with_pid))
            if gone:
                print(f"replay server: process {args.exit_with_pid} is gone; stopping",
                      file=sys.stderr)
                break
    finally:
        server.stop()
    print(cli.summary({"answered": book.answered, "unknown_request": book.unknown,
                       "skipped_lines_without_output": book.skipped}, "replay server:"),
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
