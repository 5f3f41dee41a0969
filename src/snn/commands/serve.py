"""`snn serve [--runs DIR] [--host 127.0.0.1] [--port 8000]`: the runs in a browser.

Every run, a run's cost curve and neurons, the state machine of a run in progress as it goes, and
a page that classifies a picture (see `snn.serve`). It binds to 127.0.0.1 unless told otherwise,
so only this machine can connect, and says so when it starts.
"""

from __future__ import annotations

import argparse
import ipaddress
import socket
from pathlib import Path
from typing import Any

from snn.errors import SnnError

DEFINITION = Path("statemachine") / "training.asl.json"


class ServeError(SnnError):
    pass


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="see the runs in a browser: cost curves, neurons, the state machine live, predict",
        description="A local web application over the run folders: every run, one run's cost "
        "curve, accuracies and neurons, a run in progress with its state machine, and a page "
        "that classifies a picture. It only reads the run folders.",
    )
    parser.add_argument("--runs", default="runs", help="the folder of run folders (default: runs)")
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="the address to listen on (default: 127.0.0.1, this machine only; 0.0.0.0 lets "
        "anyone who can reach this machine read the runs)",
    )
    parser.add_argument(
        "--port", type=int, default=8000, help="the port (default: 8000; 0: any free port)"
    )
    parser.add_argument(
        "--data",
        help="the data the runs were trained on, for the neurons' Z and A over the training set: "
        "a folder with the two h5 files, an .npz, or a folder of pictures (default: "
        "$SNN_DATA_DIR, else the downloaded cache)",
    )
    parser.add_argument(
        "--definition",
        metavar="FILE",
        help=f"the state machine drawn on the live page (default: ./{DEFINITION}, else the one "
        "beside the installed package's source)",
    )
    parser.set_defaults(func=run)


def find_definition(given: str | None) -> Path | None:
    if given is not None:
        path = Path(given)
        if not path.is_file():
            raise ServeError(f"--definition {given}: no such file")
        return path
    import snn

    for path in (DEFINITION, Path(snn.__file__).resolve().parents[2] / DEFINITION):
        if path.is_file():
            return path
    return None


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def allowed_hosts(given: str, bound: str, loopback: bool) -> list[str]:
    """The Host headers answered: on the loopback, its usual names and the address it listens
    on (as given and as printed), so that its own URL works and a web page elsewhere cannot
    reach it by DNS rebinding; on another address, any."""
    from snn.serve.app import LOOPBACK_HOSTS

    if not loopback:
        return ["*"]
    return list(dict.fromkeys([*LOOPBACK_HOSTS, given, bound]))


def listen(host: str, port: int) -> socket.socket:
    """A listening socket, so that a port in use is one line, before anything starts."""
    if not 0 <= port <= 65535:
        raise ServeError(f"--port {port}: a port is 0 to 65535")
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        sock = socket.socket(family, socket.SOCK_STREAM)
    except OSError as exc:
        raise ServeError(f"--host {host}: {exc.strerror or exc}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise ServeError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from snn.cli import err, out
    from snn.serve.app import create_app

    runs = Path(args.runs)
    if runs.exists() and not runs.is_dir():
        raise ServeError(f"--runs {runs}: not a folder")
    definition = find_definition(args.definition)
    loopback = _is_loopback(args.host)
    sock = listen(args.host, args.port)
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    app = create_app(runs, args.data, definition, allowed_hosts(args.host, shown, loopback))
    url = f"http://{shown}:{port}/"
    out.print(f"snn serve: {url}  (runs in {runs}/; Ctrl-C stops it)", markup=False)
    if loopback:
        out.print(f"listening on {host} only: no other machine can connect", markup=False)
    else:
        err.print(
            f"snn: warning: listening on {host}: anyone who can reach this machine can read "
            "the runs and use their models",
            markup=False,
        )
    if not runs.is_dir():
        err.print(f"snn: note: {runs}/ does not exist yet; runs appear as made", markup=False)
    if definition is None:
        err.print(
            f"snn: note: no {DEFINITION} here: the live page cannot draw the state machine "
            "(--definition FILE)",
            markup=False,
        )

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            app.state.server.stopping = True  # the live pages' streams end, so it stops at once
            super().handle_exit(sig, frame)

    config = uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=5, lifespan="off")
    try:
        Server(config).run(sockets=[sock])
    finally:
        sock.close()
    return 0
