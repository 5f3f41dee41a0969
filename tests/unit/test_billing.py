"""`snn bill` and snn.billing: the pricing arithmetic on known counts, the epoch walked through the
state machine's definition, and the metering of short runs on the local engine."""

from __future__ import annotations

from pathlib import Path

import pytest

from snn import billing
from snn.asl import INLINE_MAP_CONCURRENCY, Counts, DefinitionError, StepPath, step_path
from snn.billing import (
    LATENCY_SOURCES,
    Latencies,
    Measurement,
    Prices,
    Usage,
    estimate,
    from_runs,
    item_bytes,
    project_wall_time,
)
from snn.cli import main
from snn.commands import COMMANDS
from snn.commands.bill import LATENCY_FLAGS, PRICE_FLAGS
from snn.epoch import plan
from snn.metering import measure, record_size
from snn.parameters import Parameters
from snn.template import Template

ROOT = Path(__file__).parents[2]
DEFINITION = Template.load(ROOT / "template.yaml").definition_document()


def network(neurons: tuple[int, ...], per_task: int = 1, epochs: int = 10) -> Parameters:
    layers = len(neurons)
    activations = {f"layer{i}": "relu" for i in range(1, layers)}
    activations[f"layer{layers}"] = "sigmoid"
    return Parameters.from_dict(
        {
            "epochs": epochs,
            "layers": layers,
            "activations": activations,
            "neurons": {f"layer{i}": n for i, n in enumerate(neurons, 1)},
            "learning_rate": 0.05,
            "neurons_per_task": per_task,
        }
    )


def path_of(p: Parameters) -> StepPath:
    return step_path(DEFINITION, plan(p, "bill", 0))


def test_from_runs_splits_per_run_per_epoch_and_per_sample() -> None:
    per_epoch = Usage(state_transitions=20, lambda_invocations=10, lambda_seconds=0.5, s3_put=15)
    fixed = Usage(state_transitions=3, lambda_invocations=2, lambda_seconds=0.2, s3_put=7)
    stats = Usage(s3_put=2, s3_get=2)
    m = from_runs(
        (2, fixed + per_epoch.scaled(2), stats.scaled(2)),
        (5, fixed + per_epoch.scaled(5), stats.scaled(5)),
        record_bytes=500,
    )
    for name in ("state_transitions", "lambda_invocations", "lambda_seconds", "s3_put"):
        assert getattr(m.per_epoch, name) == pytest.approx(getattr(per_epoch, name))
        assert getattr(m.per_run, name) == pytest.approx(getattr(fixed, name))
    assert m.per_sample == stats
    with pytest.raises(ValueError, match="0 < a < b"):
        from_runs((3, fixed, stats), (3, fixed, stats), 0)


def test_noise_never_makes_a_part_negative() -> None:
    m = from_runs(
        (2, Usage(lambda_seconds=1.0), Usage()), (4, Usage(lambda_seconds=0.9), Usage()), 0
    )
    assert m.per_epoch.lambda_seconds == 0 and m.per_run.lambda_seconds == 0.9


def measurement(**per_epoch: float) -> Measurement:
    return Measurement(
        per_run=Usage(state_transitions=4, lambda_invocations=2, s3_put=10, dynamodb_writes=2),
        per_epoch=Usage(**per_epoch),
        per_sample=Usage(s3_put=3, s3_get=3),
        record_bytes=1100,
    )


def test_the_estimate_by_hand() -> None:
    m = measurement(
        state_transitions=100,
        lambda_invocations=20,
        lambda_seconds=2.0,
        s3_put=30,
        s3_get=50,
        dynamodb_writes=2,
        dynamodb_reads=0,
    )
    e = estimate(m, epochs=1000, samples=100)
    # Standard: (4 + 100 * 1000) transitions at $0.025 per 1,000
    assert e.standard.quantity == 100_004
    assert e.standard.dollars == pytest.approx(100_004 / 1000 * 0.025)
    # Express: 2 s of tasks per epoch -> 150 epochs per 5-minute execution -> 7 executions;
    # 2,000 s at 64 MB = 125 GB-seconds
    assert (e.express_epochs_per_execution, e.express_executions) == (150, 7)
    assert e.express.quantity == pytest.approx(125)
    assert e.express.dollars == pytest.approx(7 / 1e6 * 1.0 + 125 * 0.00001667)
    lines = {line.item: line for line in e.shared}
    assert lines["Lambda requests"].quantity == 20_002
    assert lines["Lambda requests"].dollars == pytest.approx(20_002 / 1e6 * 0.20)
    assert lines["Lambda compute"].quantity == pytest.approx(2000)  # 1024 MB = 1 GB
    assert lines["Lambda compute"].dollars == pytest.approx(2000 * 0.0000133334)
    assert lines["S3 PUT, LIST"].quantity == 10 + 30 * 1000 + 3 * 100
    assert lines["S3 PUT, LIST"].dollars == pytest.approx(30_310 / 1000 * 0.005)
    assert lines["S3 GET"].quantity == 50 * 1000 + 3 * 100
    assert lines["S3 GET"].dollars == pytest.approx(50_300 / 1000 * 0.0004)
    # DynamoDB: every write is billed by 1 KB of the largest item written, the 1,100-byte record
    units = (2 + 2 * 1000) * 2
    assert lines["DynamoDB write"].quantity == units
    assert lines["DynamoDB write"].dollars == pytest.approx(units / 1e6 * 0.625)
    total = sum(line.dollars for line in e.shared)
    assert e.total_standard == pytest.approx(e.standard.dollars + total)
    assert e.total_express == pytest.approx(e.express.dollars + total)
    assert e.total_express < e.total_standard


def test_the_epoch_is_walked_through_the_definition() -> None:
    # The reference network with a whole layer per task: the Choice, ForwardLayers (a Map, and
    # per layer a shard Map, ForwardLinear and Activation), Loss, BackwardLayers (a Map, and per
    # layer a shard Map and Backward), UpdateShards (a Map and one Update) and Commit.
    reference = path_of(network((20, 1), per_task=20))
    assert reference.critical == Counts(states=17, invocations=9)
    assert reference.total == Counts(states=18, invocations=10)  # two Update iterations
    assert reference.waves == 1
    # 3 layers of 3, 2 and 1 shards: every shard of a layer side by side, layers in order
    three = path_of(network((5, 3, 1), per_task=2))
    assert three.critical == Counts(states=22, invocations=12)
    assert three.total == Counts(states=36, invocations=26)


def test_a_map_runs_at_most_40_iterations_at_once() -> None:
    assert INLINE_MAP_CONCURRENCY == 40
    # 100 shards in layer 1: ceil(100 / 40) = 3 waves forward, backward, and 101 updates: 3 waves
    wide = path_of(network((100, 1)))
    assert wide.waves == 3
    forward = 1 + (1 + 2 * 3) + (1 + 2 * 1)
    backward = 1 + (1 + 3) + (1 + 1)
    update = 1 + 3
    assert wide.critical == Counts(states=1 + forward + 1 + backward + update + 1, invocations=17)
    assert wide.total.invocations == 2 * 101 + 1 + 101 + 101 + 1
    # 40 shards still fit one wave; 41 need two
    assert path_of(network((40, 1))).waves == 2  # 41 Update iterations
    assert path_of(network((39, 1))).waves == 1


def test_max_concurrency_one_runs_items_one_after_the_other() -> None:
    task = {"Type": "Task", "Resource": "arn:aws:states:::lambda:invoke", "End": True}
    definition = {
        "StartAt": "Loop?",
        "States": {
            "Loop?": {"Type": "Choice", "Choices": [], "Default": "InOrder"},
            "InOrder": {
                "Type": "Map",
                "ItemsPath": "$.a",
                "MaxConcurrency": 1,
                "ItemProcessor": {"StartAt": "T", "States": {"T": task}},
                "Next": "Five",
            },
            "Five": {
                "Type": "Map",
                "ItemsPath": "$.b",
                "MaxConcurrency": 5,
                "ItemSelector": {"x.$": "$$.Map.Item.Value"},
                "ItemProcessor": {"StartAt": "T", "States": {"T": task}},
                "Next": "Loop?",
            },
        },
    }
    walked = step_path(definition, {"a": [1, 2, 3], "b": list(range(12))})
    # Choice; InOrder: the Map and 3 tasks in turn; Five: the Map and ceil(12 / 5) = 3 waves
    assert walked.critical == Counts(states=1 + (1 + 3) + (1 + 3), invocations=6)
    assert walked.total == Counts(states=1 + 4 + 13, invocations=15)
    assert walked.waves == 3
    with pytest.raises(DefinitionError, match="not in the state's input"):
        step_path(definition, {"a": [1]})
    with pytest.raises(DefinitionError, match="one loop over the steps"):
        step_path({"States": {"T": {**task}}}, {})


def test_the_wall_time_by_hand() -> None:
    m = measurement(
        lambda_invocations=18, lambda_seconds=0.9, s3_put=30, s3_get=60, dynamodb_writes=4
    )
    latencies = Latencies().with_overrides(
        s3_request=0.02, dynamodb_request=0.01, state_transition=0.1, lambda_invoke=0.05
    )
    path = path_of(network((20, 1), per_task=20))
    w = project_wall_time(m, path, epochs=100, latencies=latencies)
    # 17 states, 9 of the epoch's 18 invocations: half of its handler time and requests
    assert w.transitions_seconds == pytest.approx(1.7)
    assert w.invokes_seconds == pytest.approx(0.45)
    assert w.handler_seconds == pytest.approx(0.45)
    assert w.s3_seconds == pytest.approx(45 * 0.02)
    assert w.dynamodb_seconds == pytest.approx(2 * 0.01)
    assert w.run_seconds == pytest.approx(100 * (1.7 + 0.45 + 0.45 + 0.9 + 0.02))
    with pytest.raises(ValueError, match=">= 0"):
        Latencies().with_overrides(s3_request=-1)
    with pytest.raises(ValueError, match="unknown latency"):
        Latencies().with_overrides(warp=1)


def test_every_latency_has_a_flag_and_a_source() -> None:
    assert sorted(LATENCY_FLAGS) == sorted(Latencies.names()) == sorted(LATENCY_SOURCES)


def test_express_is_billed_for_the_projected_wall_time() -> None:
    m = measurement(lambda_seconds=0.01)
    e = estimate(m, epochs=1000, samples=0, epoch_wall_seconds=2.0)
    # 150 epochs of 2 s per 5-minute execution; 2,000 s at 64 MB = 125 GB-seconds
    assert (e.express_epochs_per_execution, e.express_executions) == (150, 7)
    assert e.express.quantity == pytest.approx(125)


def test_an_epoch_of_no_measurable_time_needs_one_express_execution() -> None:
    e = estimate(measurement(lambda_seconds=0.0), epochs=40, samples=40)
    assert (e.express_epochs_per_execution, e.express_executions) == (40, 1)


def test_an_epoch_longer_than_five_minutes_cannot_run_on_express() -> None:
    e = estimate(measurement(lambda_seconds=301.0), epochs=3, samples=3)
    assert e.express_epochs_per_execution is None and e.express_executions == 3


def test_prices_can_be_overridden_but_not_made_negative() -> None:
    cheap = Prices().with_overrides(sfn_standard_per_1k_transitions=0.0)
    m = measurement(state_transitions=10)
    assert estimate(m, 10, 10, cheap).standard.dollars == 0
    assert estimate(m, 10, 10).standard.dollars > 0
    with pytest.raises(ValueError, match=">= 0"):
        Prices().with_overrides(s3_get_per_1k=-1)
    with pytest.raises(ValueError, match="unknown price"):
        Prices().with_overrides(gpu_per_hour=1)
    with pytest.raises(ValueError, match="samples"):
        estimate(m, 10, 11)


def test_every_price_has_a_flag() -> None:
    assert sorted(PRICE_FLAGS) == sorted(Prices.names())
    flags = [flag for flag, _ in PRICE_FLAGS.values()]
    assert len(set(flags)) == len(flags)


def test_item_bytes_counts_names_and_values() -> None:
    assert item_bytes({"run_id": {"S": "abc"}}) == 6 + 3
    assert item_bytes({"n": {"N": "12345"}}) == 1 + 4
    assert item_bytes({"m": {"M": {"0": {"S": "0.5"}, "1": {"S": "0.25"}}}}) == 1 + 3 + 5 + 6
    record = {"run_id": {"S": "r"}, "status": {"S": "RUNNING"}}
    assert record_size(record) == 6 + 1 + 6 + 7
    assert record_size(None) == 1024


def three_layers() -> Parameters:
    return Parameters.from_dict(
        {
            "epochs": 10,
            "layers": 3,
            "activations": {"layer1": "relu", "layer2": "tanh", "layer3": "sigmoid"},
            "neurons": {"layer1": 5, "layer2": 3, "layer3": 1},
            "learning_rate": 0.05,
            "neurons_per_task": 2,
        }
    )


@pytest.mark.slow
def test_metering_counts_what_the_handlers_do(synthetic_dir: Path, aws_env: None) -> None:
    m = measure(three_layers(), synthetic_dir, ROOT / "template.yaml", sample_epochs=4)
    # shards: 3 + 2 + 1 = 6. Per epoch: forward (2 tasks per shard), loss, backward, update,
    # commit; per run: init and evaluate.
    assert m.per_epoch.lambda_invocations == 2 * 6 + 1 + 6 + 6 + 1
    assert m.per_run.lambda_invocations == 2
    assert m.per_epoch.state_transitions > m.per_epoch.lambda_invocations
    # each shard writes Z and A, dW and db, the next W and b; the layers after the first
    # write dA_prev (3 shards); the loss writes dA of the output; Commit lists the next epoch's
    # weights (they must all exist) and an old epoch (to delete it)
    assert m.per_epoch.s3_put == 6 * 6 + 3 + 1 + 2
    assert m.per_epoch.s3_get > m.per_epoch.s3_put
    assert m.per_epoch.dynamodb_writes == 2  # the epoch's cost, the commit
    # every stage reads the run record once (one GetItem), served without HTTP or not
    assert m.per_epoch.dynamodb_reads == m.per_epoch.lambda_invocations
    assert m.per_run.dynamodb_reads == m.per_run.lambda_invocations  # none of the engine's
    assert m.per_sample.s3_put == 6  # one statistics object per shard
    assert m.per_sample.s3_get == 6  # read back once, by Evaluate
    # time is measured, so noisy on a busy machine: a part is never negative, and time passes
    assert m.per_epoch.lambda_seconds >= 0 and m.per_run.lambda_seconds >= 0
    assert m.per_epoch.lambda_seconds + m.per_run.lambda_seconds > 0
    assert m.per_run.s3_put >= 3  # the two h5 files and parameters.json, at least
    assert 100 < m.record_bytes < 1024  # one write unit, however long the run
    # the epoch walked through the definition enters every state the run entered and makes
    # every invocation it made: the critical path, and what the shards beyond each layer's first
    # add beside it (two tasks forward and one backward, one Update iteration each)
    path = path_of(three_layers())
    assert (m.per_epoch.state_transitions, m.per_epoch.lambda_invocations) == (
        path.total.states,
        path.total.invocations,
    )
    assert path.critical == Counts(22, 12)
    assert path.total.states == path.critical.states + 3 * (6 - 3) + (6 - 1)
    assert path.total.invocations == path.critical.invocations + 3 * (6 - 3) + (6 - 1)


@pytest.mark.slow
def test_bill_command_prints_the_estimate(
    synthetic_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], aws_env: None
) -> None:
    params = tmp_path / "p.json"
    params.write_text(three_layers().to_json())
    code = main(
        [
            "bill",
            "--params",
            str(params),
            "--epochs",
            "2500",
            "--data",
            str(synthetic_dir),
            "--template",
            str(ROOT / "template.yaml"),
            "--price-sfn-standard",
            "0.05",
            "--latency-s3-ms",
            "40",
        ]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    out = captured.out
    assert "48-5-3-1 network" in out and "2,500 epochs" in out
    for item in ("SFN Standard", "SFN Express", "Lambda compute", "S3 GET", "DynamoDB write"):
        assert item in out
    assert "total with Standard" in out and "total with Express" in out
    assert "at most 5 minutes" in out and "idempotent" in out
    assert "--price-sfn-standard" in out and "0.05" in out  # the prices used, printed
    assert "projected wall time on AWS" in out and "22 states and 12 invocations" in out
    assert "at most 40 iterations at once" in out and "ceil(S / 40) waves" in out
    assert "--latency-s3-ms" in out and "single-digit milliseconds" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--price-s3-put", "-1"], "--price-s3-put must be a number >= 0, got '-1'"),
        (["--price-lambda-gb-second", "cheap"], "--price-lambda-gb-second must be a number"),
        (["--price-sfn-standard", "nan"], "--price-sfn-standard must be a number"),
        (["--epochs", "0"], "--epochs must be at least 1"),
        (["--latency-state-ms", "-5"], "--latency-state-ms must be a number of milliseconds"),
        (["--sample-epochs", "2"], "--sample-epochs must be from 3 to 100"),
        (["--params", "missing.json"], "no such parameters file"),
        (["--template", "missing.yaml"], "no such template"),
    ],
)
def test_bad_flags_are_one_line_errors(
    argv: list[str],
    message: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "parameters.json").write_text(three_layers().to_json())
    assert main(["bill", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err


def test_the_module_names_its_assumptions() -> None:
    assert "us-east-1" in (billing.__doc__ or "")
    assert billing.EXPRESS_MAX_SECONDS == 300


def test_the_money_has_a_name_of_its_own() -> None:
    # "cost" is the loss of an epoch; the AWS bill is `snn bill` and snn.billing
    assert "bill" in COMMANDS and "cost" not in COMMANDS
    src = ROOT / "src" / "snn"
    assert not (src / "cost.py").exists() and not (src / "commands" / "cost.py").exists()
