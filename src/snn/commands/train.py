"""`snn train`: train the network of parameters.json on one of the engines, into a run folder.

The run folder is locked for the run; while the run goes it holds progress.json and (local
engine) resume/; at the end the results take its place whole. A run stopped by SIGINT, SIGTERM
or SIGHUP, or that fails, keeps what `snn train --resume` needs and says how to resume it.
"""

from __future__ import annotations

import argparse
import os
import time
import uuid
from pathlib import Path
from typing import Any

from snn import blas
from snn.engines import ENGINES, RunSpec
from snn.errors import Interrupted, RunInterrupted, SnnError
from snn.keys import check_run_id
from snn.parameters import Parameters
from snn.plan import check_run
from snn.report import RunResult
from snn.run_folder import RunFolder

# The largest --inject-faults. Every Task retries a Lambda service error 6 times (7 attempts),
# so with a fault rate r a task fails for good with probability r^7. The 2,500-epoch reference
# with one neuron per task makes about 85,100 invocations (34 an epoch, plus Init and
# ContinueAsNew per execution); it finishes when none of them fails for good:
# (1 - r^7)^85,100 >= 0.99 holds for r <= 0.1024 (at r = 0.10: 0.9915).
MAX_FAULT_RATE = 0.10
TEMPLATE = "template.yaml"


def register(subparsers: argparse._SubParsersAction) -> None:
    train = subparsers.add_parser("train", help="train the network of parameters.json")
    train.add_argument(
        "--engine",
        choices=ENGINES,
        default="local",
        help="local: the state machine on an embedded emulator (default); "
        "direct: the stages in a plain loop; aws: a deployed stack",
    )
    train.add_argument("--params", help="default: ./parameters.json")
    train.add_argument(
        "--data",
        help="the data: a folder with the two h5 files of the cat/non-cat set (default: "
        "$SNN_DATA_DIR, else a downloaded, checksummed copy in the user cache), an .npz of "
        "train_x and train_y (and test_x, test_y), or a folder of pictures in two class "
        "folders (optionally under train/ and test/)",
    )
    train.add_argument(
        "--positive",
        metavar="CLASS",
        help="with a folder of pictures: the class folder whose pictures are the positives "
        "(label 1; default: a folder named cat)",
    )
    train.add_argument("--epochs", type=int, help="override the file's epochs")
    train.add_argument("--out", help="the run folder (default: runs/<run_id>)")
    train.add_argument("--run-id", help="name the run: 1-60 letters, digits, '-' or '_'")
    train.add_argument(
        "--stack",
        help="with --engine aws: the stack name given to sam deploy (default: stack_name in "
        "./samconfig.toml)",
    )
    train.add_argument(
        "--region",
        help="with --engine aws: the stack's AWS region (default: region in ./samconfig.toml, "
        "else the AWS configuration's)",
    )
    train.add_argument(
        "--template",
        help="the SAM template the local engine stands up (default: ./template.yaml, else the "
        "one beside the installed package's source)",
    )
    train.add_argument(
        "--resume",
        metavar="RUN",
        help="carry on a failed or interrupted run from its last committed epoch: "
        "its run folder (local engine), or its run id with --engine aws",
    )
    train.add_argument(
        "--inject-faults",
        type=float,
        default=0.0,
        metavar="RATE",
        help="local engine: make this fraction of Lambda invocations fail, half before the "
        f"handler runs and half after (the response is lost); at most {MAX_FAULT_RATE}",
    )
    train.add_argument(
        "--blas-threads",
        type=int,
        metavar="N",
        help="threads numpy's BLAS may use (direct and local engines; default: "
        "$SNN_BLAS_THREADS, else 1: see the performance docs)",
    )
    train.add_argument("--quiet", action="store_true", help="no progress output")
    train.set_defaults(func=run)


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S-", time.gmtime()) + uuid.uuid4().hex[:6]


def run(args: argparse.Namespace) -> int:
    from snn.cli import UsageError, err, stop_on_signals
    from snn.data import resolve_data_dir
    from snn.sources import open_source

    if not 0 <= args.inject_faults <= MAX_FAULT_RATE:
        raise UsageError(
            f"--inject-faults must be a fraction from 0 to {MAX_FAULT_RATE}, "
            f"got {args.inject_faults}"
        )
    if args.inject_faults and args.engine != "local":
        raise UsageError("--inject-faults works with the local engine only")
    if args.region is not None and args.engine != "aws":
        raise UsageError("--region works with --engine aws only")
    if args.engine == "aws":
        from snn import samconfig

        args.target = samconfig.target(args.stack, args.region)
    if args.blas_threads is not None:
        if not 1 <= args.blas_threads <= 256:
            raise UsageError(f"--blas-threads must be from 1 to 256, got {args.blas_threads}")
        os.environ[blas.ENV] = str(args.blas_threads)  # the handlers of the local engine too
    if args.engine == "local":
        args.template = find_template(args.template)
    if args.resume:
        if args.engine == "direct":
            raise UsageError("--resume works with the local engine (a run folder) or --engine aws")
        fixed = [
            flag
            for flag, value in _run_flags(args)
            if value is not None and not (flag == "--out" and args.engine == "aws")
        ]
        if fixed:
            raise UsageError(
                f"--resume carries on the run as it was started: {', '.join(fixed)} cannot "
                "change it (start a new run instead)"
            )
        return _resume(args)

    p = Parameters.load(args.params or "parameters.json")
    if args.epochs is not None:
        if args.epochs < 1:
            raise UsageError(f"--epochs must be at least 1, got {args.epochs}")
        p = p.with_epochs(args.epochs)
    run_id = check_run_id(args.run_id) if args.run_id else new_run_id()
    data = resolve_data_dir(args.data)
    source = open_source(data, args.positive)
    dataset = source.dataset(p.training)  # validates the data before any run starts
    _check_memory(args, p, dataset, source)
    check_run(p, dataset)  # and what the end of the run checks
    given = str(data.resolve()) if args.data else None
    with RunFolder(_folder(args, run_id), new=True) as folder, stop_on_signals():
        if not args.quiet:  # once the folder is taken: a refusal is one line
            dims = "-".join(str(n) for n in p.layer_dims(dataset.n_x))
            err.print(
                f"run {run_id}: {dims} network, {p.epochs} epochs, {args.engine} engine, "
                f"{p.neurons_per_task} neuron(s) per task"
            )
        if args.engine == "aws":
            err.print(f"aws engine: {args.target.describe()}", markup=False)
        spec = _spec(
            args, p, data, run_id, folder, positive=args.positive, given=given, inputs=dataset.n_x
        )
        return _train(args, spec, resume=False)


def _run_flags(args: argparse.Namespace) -> list[tuple[str, Any]]:
    """The flags that choose what a new run trains and where: fixed once the run has started."""
    return [
        ("--params", args.params),
        ("--data", args.data),
        ("--positive", args.positive),
        ("--epochs", args.epochs),
        ("--out", args.out),
        ("--run-id", args.run_id),
    ]


def find_template(given: str | None) -> str:
    """--template as given; by default ./template.yaml, else the one beside the installed
    package's source (as `snn serve` finds the state machine), so that `snn train` runs from
    any folder."""
    from snn.cli import UsageError

    if given is not None:
        if not Path(given).is_file():
            raise UsageError(f"--template {given}: no such file")
        return given
    found = default_template()
    if found is None:
        raise UsageError(
            f"no {TEMPLATE} here nor beside the installed package: give the SAM application's "
            "template with --template FILE"
        )
    return str(found)


def default_template() -> Path | None:
    """./template.yaml, else the one beside the installed package's source, else None."""
    import snn

    for path in (Path(TEMPLATE), Path(snn.__file__).resolve().parents[2] / TEMPLATE):
        if path.is_file():
            return path
    return None


def _check_memory(args: argparse.Namespace, p: Parameters, dataset: Any, source: Any) -> None:
    """Refuse, before anything runs, a network of which some stage needs more memory than its
    function has in the template (or data that Init cannot write to its /tmp). Without a
    template there is nothing to check against (the local engine then refuses to start)."""
    from snn import memory
    from snn.template import Template

    template = Path(args.template) if args.template else default_template()
    if template is None or not template.is_file():
        return
    t = Template.load(template)
    memory.check(p, data_shape(p, dataset, source), t.memory_limits(), source=str(args.params))
    init = t.functions().get(memory.FUNCTIONS["Init"])
    if init is not None and source.kind == "h5":
        memory.check_storage(_upload_bytes(source, dataset), init.ephemeral_mb)


def data_shape(p: Parameters, dataset: Any, source: Any) -> Any:
    """The shape of the data a run of `p` keeps (`snn.memory.Data`)."""
    from snn import memory
    from snn.network import held_out

    m = int(dataset.train_x.shape[1])
    valid = held_out(m, p.training.validation) if p.training.validation is not None else 0
    return memory.Data(
        dataset.n_x, m - valid, valid, int(dataset.test_x.shape[1]), _upload_bytes(source, dataset)
    )


def _upload_bytes(source: Any, dataset: Any) -> int:
    """The size of what Init reads: the h5 files or the .npz; a folder of pictures becomes an
    .npz of its pixels, one byte each."""
    from snn.data import TEST_FILE, TRAIN_FILE

    if source.kind == "h5":
        return sum((source.path / name).stat().st_size for name in (TRAIN_FILE, TEST_FILE))
    if source.kind == "npz":
        return source.path.stat().st_size
    return int(dataset.train_x.size + dataset.test_x.size)


def _folder(args: argparse.Namespace, run_id: str) -> Path:
    return Path(args.out) if args.out else Path("runs") / run_id


def _spec(
    args: argparse.Namespace,
    p: Parameters,
    data: Path,
    run_id: str,
    folder: RunFolder,
    costs: list[float] | None = None,
    positive: str | None = None,
    given: str | None = None,
    inputs: int | None = None,
) -> RunSpec:
    """`given`: the data as --data named it, kept in progress.json and metrics.json."""
    from snn.engines.progress import Progress, ProgressWriter

    if inputs is None:  # a resumed run: what its first process said
        before = folder.read_progress()
        inputs = before.get("inputs") if isinstance(before, dict) else None
    progress = Progress(
        run_id, args.engine, p.to_dict(), p.epochs, costs=list(costs or []), data=given
    )
    progress.inputs = inputs if isinstance(inputs, int) else None
    writer = ProgressWriter(folder, progress)
    return RunSpec(p, data, run_id, folder=folder, progress=writer, positive=positive)


def _resume(args: argparse.Namespace) -> int:
    """A local run folder (what a failed or interrupted run saved there), or, with --engine
    aws, the id of a run on the deployed stack."""
    from snn.cli import err, stop_on_signals

    if args.engine == "aws":
        from snn.engines import aws

        run_id = check_run_id(args.resume)
        err.print(f"aws engine: {args.target.describe()}", markup=False)
        p, costs = aws.saved_run(args.target.stack, run_id, args.target.session())
        with RunFolder(_folder(args, run_id), new=True) as folder, stop_on_signals():
            return _train(args, _spec(args, p, Path("."), run_id, folder, costs), resume=True)
    from snn.engines import local

    path = Path(args.resume)
    _check_resumable(path)  # before the folder is locked: a refused resume writes nothing
    with RunFolder(path, new=False) as folder, stop_on_signals():
        found = local.saved_run(folder.resume_dir)
        p = found.parameters
        if not args.quiet:
            err.print(
                f"run {found.run_id}: resuming at epoch {found.committed} of {p.epochs}, "
                "local engine"
            )
        costs = [float(found.record["costs"][str(e)]) for e in range(found.committed)]
        given = (folder.read_progress() or {}).get("data")
        given = given if isinstance(given, str) else None
        spec = _spec(args, p, Path("."), found.run_id, folder, costs, given=given)
        return _train(args, spec, resume=True, found=found)


def _check_resumable(path: Path) -> None:
    """Refuse, in one line, a folder that holds nothing to resume: none, a finished run, a
    resume state that cannot be read."""
    from snn.engines.local import saved
    from snn.run_folder import FolderError

    if not path.is_dir():
        raise FolderError(f"{path}: no such run folder")
    if not (path / "resume" / saved.STATE).is_file() and (path / "metrics.json").is_file():
        raise saved.ResumeError(
            f"{path}: the run has finished (its results are there): nothing to resume; "
            "start a new run to train it longer"
        )
    saved.load(path / "resume")


def _train(args: argparse.Namespace, spec: RunSpec, resume: bool, found: Any = None) -> int:
    """Run the engine with a progress display, and end as the run ends: the results in place of
    the run folder, or progress.json saying how the run failed or was stopped."""
    from snn.cli import defer_signals, err, out, progress

    assert spec.progress is not None and spec.folder is not None
    spec.progress.publish(force=True)
    first = len(spec.progress.progress.costs)
    try:
        with progress(spec.parameters.epochs, first, args.quiet) as on_epoch:
            spec.on_epoch = on_epoch
            result = _engine_run(args, spec, resume, found)
    except RunInterrupted as exc:
        _ended(spec, "interrupted", str(exc))
        raise
    except SnnError as exc:
        _ended(spec, "failed", str(exc))
        raise
    except (KeyboardInterrupt, Interrupted):
        _ended(spec, "interrupted", _stopped(args, spec))
        raise
    spec.progress.progress.status = "succeeded"
    if spec.progress.progress.data is not None:
        result.extra["data"] = spec.progress.progress.data
    with defer_signals() as deferred:  # the results appear whole, a signal or not
        spec.folder.finish(result, spec.progress.progress.to_dict())
    if not args.quiet:
        out.print(
            f"final cost {result.costs[-1]:.6f}  train accuracy {result.train_accuracy:.2f}  "
            f"test accuracy {result.test_accuracy:.2f}  ({result.wall_seconds:.1f} s)"
        )
        _early_stop_note(result)
        out.print(
            f"run folder: {spec.folder.path}  (metrics.json, model.npz, neurons.npz, cost.png)"
        )
    if deferred:
        err.print(
            f"snn: {deferred[0]} came as the results were put in place: the run finished",
            markup=False,
        )
    return 0


def _stopped(args: argparse.Namespace, spec: RunSpec) -> str:
    """What a run stopped outside the engine's own handling (a second Ctrl-C while it saved, a
    signal as it ended) leaves: the resume command if a resume state was saved."""
    from snn.cli import err

    assert spec.folder is not None
    if args.engine == "direct":
        return "interrupted; the direct engine keeps nothing to resume"
    if (spec.folder.resume_dir / "state.json").is_file():
        hint = f"snn train --resume {spec.folder.path}"
        err.print(f"snn: the run can be resumed with: {hint}", markup=False)
        return f"interrupted; resume it with: {hint}"
    return "interrupted; nothing to resume (the run had not saved its state)"


def _early_stop_note(result: RunResult) -> None:
    from snn.cli import out

    epochs, done = result.parameters.get("epochs"), len(result.costs)
    model_epoch = result.extra.get("model_epoch")
    if result.extra.get("stopped_early") or (isinstance(epochs, int) and done < epochs):
        note = f"stopped early after {done} of {epochs} epochs"
        if isinstance(model_epoch, int):
            note += (
                f": the model is epoch {model_epoch + 1}'s, the best validation cost "
                f"(model_epoch {model_epoch} in metrics.json, counted from 0)"
            )
        out.print(note)


def _engine_run(args: argparse.Namespace, spec: RunSpec, resume: bool, found: Any) -> RunResult:
    if args.engine == "direct":
        from snn.engines import direct

        return direct.train(spec)
    if args.engine == "local":
        from snn.engines import local

        if resume:
            return local.resume(spec, args.template, args.inject_faults, found)
        return local.train(spec, template=args.template, fault_rate=args.inject_faults)
    from snn.engines import aws

    target = args.target
    return (aws.resume if resume else aws.train)(spec, target.stack, target.session())


def _ended(spec: RunSpec, status: str, message: str) -> None:
    """progress.json says how the run ended; a new run that left nothing to resume leaves
    nothing behind (a folder it was given stays, empty)."""
    assert spec.progress is not None and spec.folder is not None
    spec.progress.end(status, message)
    if spec.folder.new and not spec.folder.resume_dir.exists():
        spec.folder.discard()
