"""Helpers the tests share (fixtures are in conftest.py): the project's folders, small networks,
the handlers by name, one epoch's events in the state machine's order, a snapshot of everything
a stack holds, and runs through the engines' public API."""

from __future__ import annotations

import importlib
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from snn import network as nn
from snn.engines import RunSpec
from snn.epoch import calls, calls_in_order
from snn.parameters import Parameters
from snn.template import load_yaml

ROOT = Path(__file__).resolve().parents[1]

# Fake credentials and a region, so that no test can reach a real account (the `aws_env`
# fixture sets them; a module-scoped emulator sets them itself).
FAKE_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
    "POWERTOOLS_METRICS_DISABLED": "true",
}

# The functions of training, by handler module (snn.handlers.<name>), and the ones outside it.
STAGES = (
    "init",
    "forward_linear",
    "activation",
    "loss",
    "backward",
    "update",
    "commit",
    "evaluate",
    "record_failure",
    "continue_as_new",
)
OUTSIDE_TRAINING = ("predict", "execution_failed")


def handler(name: str) -> Any:
    """The Lambda entry point of a function, as template.yaml names it."""
    return importlib.import_module(f"snn.handlers.{name}").handler


def init_event(flat: Any) -> Any:
    """Init's event from a flat one (the execution input's fields and execution_name): the
    input under "input", the execution's name beside it. Anything else is left as it is."""
    if not isinstance(flat, dict):
        return flat
    event: dict[str, Any] = {"input": {k: v for k, v in flat.items() if k != "execution_name"}}
    if "execution_name" in flat:
        event["execution_name"] = flat["execution_name"]
    return event


def start_run(st: Any, run_id: str, p: Parameters, data: Path) -> dict[str, Any]:
    """A run created on the stack and initialised, as an execution named run_id would: the plan."""
    from snn.engines.stack import create_run

    return handler("init")(
        init_event({**create_run(st, run_id, p, data), "execution_name": run_id}), None
    )


def step_events(
    plan: dict[str, Any], epoch: int, batch: int = 0
) -> Iterator[tuple[str, dict[str, Any]]]:
    """(stage, event) of one step, in the order the state machine invokes them."""
    for call in calls_in_order(calls(plan, epoch, batch)):
        yield call.stage, {"run_id": plan["run_id"], **call.fields}


def epoch_events(plan: dict[str, Any], epoch: int) -> Iterator[tuple[str, dict[str, Any]]]:
    """(stage, event) of every step of one epoch, in order."""
    for batch in range(plan["batches"]):
        yield from step_events(plan, epoch, batch)


def run_events(plan: dict[str, Any], epochs: range | None = None) -> None:
    """Every epoch of the plan (or the given ones), through the handlers."""
    for epoch in epochs if epochs is not None else range(plan["progress"]["epoch"], plan["epochs"]):
        for stage, event in epoch_events(plan, epoch):
            handler(stage)(event, None)


def network(
    neurons: list[int],
    activations: list[str] | None = None,
    epochs: int = 2,
    **fields: Any,
) -> Parameters:
    """A network of the given widths (the last must be 1): relu hidden layers and a sigmoid
    output unless told, learning rate 0.05."""
    acts = activations or ["relu"] * (len(neurons) - 1) + ["sigmoid"]
    raw = {
        "epochs": epochs,
        "layers": len(neurons),
        "activations": {f"layer{i}": a for i, a in enumerate(acts, 1)},
        "neurons": {f"layer{i}": n for i, n in enumerate(neurons, 1)},
        "learning_rate": 0.05,
        **fields,
    }
    return Parameters.from_dict(raw)


def tiny_parameters(epochs: int = 2) -> Parameters:
    """A 2-2-1 network: the smallest that has every stage."""
    return network([2, 1], epochs=epochs)


def three_layers(neurons_per_task: int, epochs: int = 4) -> Parameters:
    return network(
        [5, 3, 1],
        ["relu", "tanh", "sigmoid"],
        epochs=epochs,
        initialization="xavier",
        neurons_per_task=neurons_per_task,
    )


def reference(epochs: int = 2500, neurons_per_task: int = 7) -> Parameters:
    """The published reference: 12288-7-1, relu/sigmoid, lr 0.0075, seed 1, randn * 0.01."""
    p = Parameters.load(ROOT / "parameters.json").to_dict()
    return Parameters.from_dict(
        {
            **p,
            "epochs": epochs,
            "neurons": {"layer1": 7, "layer2": 1},
            "neurons_per_task": neurons_per_task,
        }
    )


def spec(p: Parameters, data_dir: Path, run_id: str = "r", **fields: Any) -> RunSpec:
    return RunSpec(p, Path(data_dir), run_id, **fields)


def outputs_stack(name: str, outputs: dict[str, str]) -> None:
    """A CloudFormation stack (in the emulator) whose only purpose is its literal outputs."""
    import boto3

    template = {
        "Resources": {"Nothing": {"Type": "AWS::CloudFormation::WaitConditionHandle"}},
        "Outputs": {key: {"Value": value} for key, value in outputs.items()},
    }
    cloudformation = boto3.client("cloudformation", region_name=FAKE_AWS_ENV["AWS_REGION"])
    cloudformation.create_stack(StackName=name, TemplateBody=json.dumps(template))


def deployed(embedded: Any, name: str = "snn-emulated") -> str:
    """Stands in for `sam deploy`: a stack named `name` whose outputs name the embedded stack's
    bucket, table and state machine, as template.yaml's outputs do. Returns the name."""
    st = embedded.stack
    outputs_stack(
        name,
        {
            "BucketName": st.bucket,
            "TableName": st.table,
            "StateMachineArn": st.state_machine_arn,
        },
    )
    return name


def assert_same_run(a: Any, b: Any) -> None:
    """Two RunResults with the same costs and weights, bit for bit."""
    assert a.costs == b.costs
    assert len(a.weights) == len(b.weights)
    for (Wa, ba), (Wb, bb) in zip(a.weights, b.weights, strict=True):
        assert np.array_equal(Wa, Wb)
        assert np.array_equal(ba, bb)
    assert (a.train_accuracy, a.test_accuracy) == (b.train_accuracy, b.test_accuracy)


def project_copy(tmp_path: Path) -> Path:
    """template.yaml and statemachine/ in a temporary folder, to change them safely."""
    shutil.copy(ROOT / "template.yaml", tmp_path / "template.yaml")
    shutil.copytree(ROOT / "statemachine", tmp_path / "statemachine")
    return tmp_path / "template.yaml"


def train_run(folder: Path, p: Parameters, data: Path, run_id: str) -> Path:
    """A run folder made as a user makes one: `snn train --engine direct`."""
    from snn.cli import main

    params = folder.parent / f"{run_id}.json"
    params.write_text(json.dumps(p.to_dict()))
    argv = ["train", "--engine", "direct", "--params", str(params), "--data", str(data)]
    assert main([*argv, "--out", str(folder), "--run-id", run_id, "--quiet"]) == 0
    return folder


def with_handler(tmp_path: Path, stage: str, replacement: str) -> Path:
    """A copy of the project (project_copy) whose `stage` function runs `replacement`."""
    template = project_copy(tmp_path)
    text = template.read_text(encoding="utf-8")
    original = f"Handler: snn.handlers.{stage}.handler"
    assert original in text
    template.write_text(text.replace(original, f"Handler: {replacement}"), encoding="utf-8")
    return template


class Snapshot:
    """Everything a stack holds: every object of the bucket (key -> bytes) and every item of the
    table (as DynamoDB returns it, sorted by key), taken as often as a test needs. An object's
    bytes are fetched again only when its ETag is new."""

    def __init__(self, stack: Any) -> None:
        self.stack = stack
        self._bytes: dict[tuple[str, str], bytes] = {}

    def __call__(self) -> tuple[dict[str, bytes], list[dict[str, Any]]]:
        st = self.stack
        objects = {}
        for page in st.s3.get_paginator("list_objects_v2").paginate(Bucket=st.bucket):
            for o in page.get("Contents", []):
                cache_key = (o["Key"], o.get("ETag", ""))
                if cache_key not in self._bytes or not o.get("ETag"):
                    body = st.s3.get_object(Bucket=st.bucket, Key=o["Key"])["Body"].read()
                    self._bytes[cache_key] = body
                objects[o["Key"]] = self._bytes[cache_key]
        items = []
        scan = st.dynamodb.get_paginator("scan")
        for page in scan.paginate(TableName=st.table, ConsistentRead=True):
            items.extend(page["Items"])
        return objects, sorted(items, key=lambda i: (i["run_id"]["S"], i["entry"]["S"]))


def export_test_pictures(data_dir: Path, folder: Path) -> tuple[list[Path], np.ndarray, np.ndarray]:
    """The test set's pictures as PNG files: (paths, images (m, 64, 64, 3), labels (m,))."""
    import h5py
    from PIL import Image

    from snn.data import TEST_FILE

    with h5py.File(Path(data_dir) / TEST_FILE, "r") as h5:
        images, labels = h5["test_set_x"][()], h5["test_set_y"][()]
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, image in enumerate(images):
        path = folder / f"test{i:02d}.png"
        Image.fromarray(image).save(path)
        paths.append(path)
    return paths, images, labels


# --- IAM: a template one grant short ------------------------------------------------------------

PRINCIPALS = sorted(
    name
    for name, res in load_yaml(ROOT / "template.yaml")["Resources"].items()
    if res["Type"] in ("AWS::Serverless::Function", "AWS::Serverless::StateMachine")
)


def grants() -> list[tuple[str, int, str]]:
    """(principal, index of its policy, action) for every action of every principal's policy
    in template.yaml."""
    from snn.engines.local import iam

    out = []
    for name in PRINCIPALS:
        policies = load_yaml(ROOT / "template.yaml")["Resources"][name]["Properties"]["Policies"]
        for i, policy in enumerate(policies):
            for statement in iam.role_statements(policy):
                out.extend((name, i, a) for a in iam._as_list(statement["Action"]))
    return sorted(set(out))


def without(folder: Path, principal: str, index: int, action: str) -> Path:
    """A copy of the project whose template.yaml lacks `action` in policy `index` of
    `principal` (a SAM policy template that grants only it goes whole)."""
    from snn.engines.local import iam

    template = project_copy(folder)
    raw = load_yaml(template)
    policies = raw["Resources"][principal]["Properties"]["Policies"]
    policy = policies[index]
    if "Statement" not in policy:
        del policies[index]
    else:
        kept = []
        for statement in policy["Statement"]:
            actions = [a for a in iam._as_list(statement["Action"]) if a != action]
            if actions:
                kept.append({**statement, "Action": actions})
        policy["Statement"] = kept
    template.write_text(json.dumps(raw), encoding="utf-8")  # JSON is YAML
    return template


# --- gradients, by backpropagation and by central differences ---------------------------------

Params = list[tuple[np.ndarray, np.ndarray]]


def forward_cache(params: Params, activations: list[str], X: np.ndarray):
    """A[L] and, per layer, (A_prev, Z) for the backward pass."""
    A, cache = X, []
    for (W, b), g in zip(params, activations, strict=True):
        Z = nn.linear_forward(W, b, A)
        cache.append((A, Z))
        A = nn.activate(Z, g)
    return A, cache


def analytic_gradients(
    params: Params, activations: list[str], X: np.ndarray, Y: np.ndarray, l2: float = 0.0
):
    """[(dW1, db1), ...] by backpropagation, from the module's backward functions only."""
    AL, cache = forward_cache(params, activations, X)
    dA = nn.cost_gradient(AL, Y)
    grads: list[tuple[np.ndarray, np.ndarray]] = []
    for (W, _), g, (A_prev, Z) in reversed(list(zip(params, activations, cache, strict=True))):
        dZ = nn.activation_backward(dA, Z, g)
        dW, db, dA = nn.linear_backward(dZ, A_prev, W, l2=l2)
        grads.append((dW, db))
    return grads[::-1]


def network_cost(
    params: Params, activations: list[str], X: np.ndarray, Y: np.ndarray, l2: float = 0.0
) -> float:
    """The cost (with L2's share when l2 > 0)."""
    c = nn.cost(nn.forward(params, activations, X), Y)
    return c + nn.l2_cost([W for W, _ in params], l2, Y.shape[1]) if l2 else c


def numerical_gradients(
    params: Params,
    activations: list[str],
    X: np.ndarray,
    Y: np.ndarray,
    eps: float = 1e-7,
    l2: float = 0.0,
):
    """Central differences of the cost with respect to every entry of every W and b."""
    grads = []
    for layer, (W, b) in enumerate(params):
        pair = []
        for which, M in ((0, W), (1, b)):
            G = np.zeros_like(M)
            for idx in np.ndindex(M.shape):
                values = []
                for sign in (1, -1):
                    shifted = M.copy()
                    shifted[idx] += sign * eps
                    trial = list(params)
                    trial[layer] = (shifted, b) if which == 0 else (W, shifted)
                    values.append(network_cost(trial, activations, X, Y, l2))
                G[idx] = (values[0] - values[1]) / (2 * eps)
            pair.append(G)
        grads.append((pair[0], pair[1]))
    return grads


def flat(grads) -> np.ndarray:
    return np.concatenate([g.ravel() for pair in grads for g in pair])


def huge_h5_pair(folder: Path, m: int = 10**7) -> Path:
    """The cat/non-cat layout in a few KB whose training file declares m pictures of 64 x 64
    (10**7 of them: 114 GiB), none of them written."""
    import h5py

    from snn.data import TRAIN_FILE, synthetic_images, write_h5_pair

    write_h5_pair(folder, *synthetic_images(size=64, m_train=2, m_test=2))
    with h5py.File(folder / TRAIN_FILE, "w") as h5:
        h5.create_dataset("train_set_x", shape=(m, 64, 64, 3), dtype=np.uint8, chunks=True)
        h5.create_dataset("train_set_y", shape=(m,), dtype=np.int64, chunks=True)
        h5.create_dataset("list_classes", data=np.array([b"non-cat", b"cat"]))
    return folder


def early_stopping_data(folder: Path, m: int = 60, shuffle_seed: int = 7) -> Path:
    """Two classes of 4x4 pictures whose held-out validation examples (a quarter, split with
    `shuffle_seed`) are labelled against the pattern the training examples teach: the better a
    network learns, the worse its validation cost, so its best epoch comes early. The h5 pair's
    folder."""
    from snn.data import write_h5_pair

    rng = np.random.default_rng(4)
    labels = np.arange(m) % 2
    means = np.array([60.0, 190.0])
    images = np.clip(
        means[labels][:, None, None, None] + rng.normal(0, 8, (m, 4, 4, 3)), 0, 255
    ).astype(np.uint8)
    _, held = nn.validation_split(m, 0.25, shuffle_seed)
    flipped = labels.copy()
    flipped[held] = 1 - flipped[held]
    return write_h5_pair(folder, images, flipped, images[:8], labels[:8])


def train_args(
    params: Path,
    data: Path,
    out: Path,
    template: Path = ROOT / "template.yaml",
    engine: str | None = None,
) -> list[str]:
    """The arguments of `snn train` for run "r" of `params` on `data` into `out`, quiet."""
    chosen = ["--engine", engine] if engine else []
    return [
        "train",
        *chosen,
        "--params",
        str(params),
        "--data",
        str(data),
        "--out",
        str(out),
        "--run-id",
        "r",
        "--template",
        str(template),
        "--quiet",
    ]


def early_stopping_network(**fields: Any) -> Parameters:
    """A 2-layer Adam network with mini-batches that watches a quarter of `early_stopping_data`
    held out: its best epoch comes early, and patience 3 stops it there."""
    return network(
        [4, 1],
        epochs=40,
        learning_rate=0.01,
        initialization="xavier",
        batch_size=16,
        optimizer={"name": "adam"},
        validation=0.25,
        early_stopping={"patience": 3},
        shuffle_seed=7,
        **fields,
    )
