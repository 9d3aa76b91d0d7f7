"""The ``cxr-bench serve`` command: check the results folder, start the server, print its address."""

from __future__ import annotations

import argparse
import ipaddress
import signal
import sys
from pathlib import Path

from werkzeug.serving import make_server

from benchmark.serve.app import create_app, state
from benchmark.serve.results import MissingFilesError

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
MAX_PORT = 65535


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cxr-bench serve",
        description="A local web page for a finished run: the leaderboard, plots and provenance, and one image's "
        "answer with its heatmap (the same code as cxr-bench predict). Ctrl-C stops it.",
    )
    parser.add_argument("results_dir", type=Path, metavar="RESULTS_DIR", help="a finished run's --results-dir")
    parser.add_argument("--host", default=DEFAULT_HOST,
                        help=f"address to listen on (default {DEFAULT_HOST}: this machine only)")  # fmt: skip
    parser.add_argument("--port", type=port, default=DEFAULT_PORT,
                        help=f"0 to {MAX_PORT} (default {DEFAULT_PORT}; 0: any free port)")  # fmt: skip
    parser.add_argument("--weights", metavar="imagenet|none|DIR",
                        help="the folder holding the run's weights file, where the one run.json records has moved "
                        "(or was relative to another folder); it must have the SHA-256 the run recorded")  # fmt: skip
    return parser


def port(text: str) -> int:
    """``--port``: a whole number from 0 to 65535 (the operating system would wrap a larger one, or fail on a
    negative one with a traceback)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (0 to {MAX_PORT})") from None
    if not 0 <= value <= MAX_PORT:
        raise argparse.ArgumentTypeError(f"{value} is outside 0 to {MAX_PORT} (0: any free port)")
    return value


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def address(host: str, port: int) -> str:
    """The URL of a server listening on ``host:port``."""
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def _listen(host: str, port: int, app):
    """A threaded werkzeug server for ``app`` on ``host:port``, or None (and the reason printed) if it cannot."""
    try:
        return make_server(host, port, app, threaded=True)
    except (OSError, SystemExit) as error:  # werkzeug prints why (the port is in use, ...) and exits
        reason = f": {error.strerror}" if isinstance(error, OSError) else ""
        print(f"serve: error: cannot listen on {host}:{port}{reason}; choose another --port (0: any free one) or "
              "--host", file=sys.stderr)  # fmt: skip
        return None


def main(argv: list[str] | None = None) -> int:
    """CLI: serve a run until Ctrl-C. Exit 2 for an incomplete results folder, 1 when the port cannot be used."""
    args = _parser().parse_args(argv)
    try:
        app = create_app(args.results_dir, weights=args.weights)
    except MissingFilesError as error:
        print(f"serve: error: {error}", file=sys.stderr)
        return 2
    except (ValueError, OSError, KeyError) as error:
        print(f"serve: error: cannot read the run in {args.results_dir}: {error}", file=sys.stderr)
        return 2
    served = state(app)
    server = _listen(args.host, args.port, app)
    if server is None:
        served.close()
        return 1
    if not _is_loopback(args.host):
        print(f"WARNING: listening on {args.host}: anyone who can reach this machine can see the run and upload images")
    # `kill` (SIGTERM) stops it as Ctrl-C does, so the temporary folder is removed then too.
    signal.signal(signal.SIGTERM, _interrupt)
    print(f"serving {served.view.results_dir} at {address(args.host, server.server_port)} (Ctrl-C stops); uploads "
          f"and heatmaps go to {served.temp.name}, removed when it stops", flush=True)  # fmt: skip
    try:
        server.serve_forever()  # werkzeug's returns on Ctrl-C
    finally:
        server.server_close()
        served.close()
    print(f"stopped; removed {served.temp.name}")
    return 0
