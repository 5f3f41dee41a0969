"""`snn emulator [--host 127.0.0.1] [--port 5000] [--env-file FILE]`: the stack of template.yaml
served on a port, for functions that run elsewhere (`sam local invoke`, a handler run by hand).

It stands up the stack the local engine runs on (the bucket, the table, the state machine, the
functions served in-process) and serves it over HTTP (`snn.engines.local.served`); it prints the
environment file that points a function at it (`events/env.emulator.json`'s variables, filled
in) and stays up until stopped. Everything is in memory: it is gone when the emulator stops.
"""

from __future__ import annotations

import argparse
import contextlib
import json
from pathlib import Path
from typing import Any

from snn.errors import SnnError

# The emulator's address as a function's container sees it (Docker Desktop resolves it; Docker
# Engine on Linux needs `--add-host host.docker.internal:host-gateway`).
CONTAINER_HOST = "host.docker.internal"
DEFAULT_PORT = 5000


class EmulatorError(SnnError):
    pass


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "emulator",
        help="serve the stack of template.yaml (bucket, table, state machine) on a port, for "
        "sam local invoke",
        description="Stand up the stack of template.yaml in memory, as the local engine does, "
        "and serve its S3 bucket, DynamoDB table and Step Functions state machine on a port. "
        "Prints the environment file for `sam local invoke --env-vars` and stays up until "
        "stopped (Ctrl-C); everything it holds is gone then.",
    )
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="the address to listen on (default: 127.0.0.1, this machine only; containers on "
        "Docker Engine reach the host at the docker0 bridge's address, 172.17.0.1 by default)",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=DEFAULT_PORT,
        help=f"the port (default: {DEFAULT_PORT}, as in events/env.emulator.json; 0: any free "
        "port)",
    )
    parser.add_argument(
        "--template",
        default="template.yaml",
        help="the SAM template to stand up (default: ./template.yaml)",
    )
    parser.add_argument(
        "--env-file",
        metavar="FILE",
        help="also write the environment file there (it is printed either way)",
    )
    parser.set_defaults(func=run)


def environment(bucket: str, table: str, port: int, host: str = CONTAINER_HOST) -> dict[str, Any]:
    """SAM's environment file for every function: where the emulated stack is."""
    return {
        "Parameters": {
            "SNN_BUCKET": bucket,
            "SNN_TABLE": table,
            "AWS_ENDPOINT_URL": f"http://{host}:{port}",
        }
    }


def run(args: argparse.Namespace) -> int:
    from snn.cli import err, stop_on_signals
    from snn.commands.serve import listen
    from snn.errors import Interrupted

    if not Path(args.template).is_file():
        raise EmulatorError(f"{args.template}: no such template (run from the project folder)")
    env_file = Path(args.env_file) if args.env_file else None
    if env_file is not None and not env_file.parent.is_dir():
        raise EmulatorError(f"--env-file {env_file}: no folder {env_file.parent}")

    sock = listen(args.host, args.port)  # a port in use is one line, before anything starts
    server = None
    try:
        from snn.engines.local import EmbeddedStack, served

        server = served.make_server(sock)
        # Once the stack is up, a stop (Ctrl-C, SIGTERM, SIGHUP) ends it as it ends serving.
        with (
            EmbeddedStack(args.template) as embedded,
            stop_on_signals(),
            contextlib.suppress(KeyboardInterrupt, Interrupted),
        ):
            _announce(embedded, args.host, sock.getsockname()[1], env_file)
            server.serve_forever()  # returns on Ctrl-C
    finally:
        if server is not None:
            server.server_close()
        sock.close()
    err.print("snn emulator: stopped", markup=False)
    return 0


def _announce(embedded: Any, host: str, port: int, env_file: Path | None) -> None:
    """Where the stack is served and what it holds (stderr), and the environment file (stdout,
    and env_file if given)."""
    from snn.cli import err, out
    from snn.commands.serve import _is_loopback
    from snn.engines.local import REGION

    st = embedded.stack
    env = environment(st.bucket, st.table, port)
    if env_file is not None:
        env_file.write_text(json.dumps(env, indent=2) + "\n", encoding="utf-8")
    shown = f"[{host}]" if ":" in host else host
    err.print(
        f"snn emulator: http://{shown}:{port}/ in region {REGION}: bucket {st.bucket}, "
        f"table {st.table}, state machine {st.state_machine_arn}",
        markup=False,
    )
    where = f" (also in {env_file})" if env_file is not None else ""
    err.print(
        f"in memory until stopped (Ctrl-C); the environment file for sam local invoke "
        f"--env-vars{where}:",
        markup=False,
    )
    if not _is_loopback(host):
        err.print(
            f"snn: warning: listening on {host}: anyone who can reach this address can read "
            "and write the emulated stack",
            markup=False,
        )
    out.print(json.dumps(env, indent=2), markup=False)
    out.file.flush()
