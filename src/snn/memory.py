"""How much memory each stage's invocation needs: its working set, as a formula of the network,
`neurons_per_task`, the data's shape, the batch size and the optimizer.

Lambda kills an invocation whose process outgrows its function's MemorySize
(`Runtime.OutOfMemory`, which no Retry of the state machine covers), so a network whose stages
do not fit must be refused before it runs (`check`), and the local engine fails such an
invocation as Lambda would (`snn.engines.local.lambda_service`).

The formula follows each stage's code, allocation by allocation, in the order it makes them
(`_Tally`): what it holds (an array read, a result kept) and what passes (a temporary), and
counts the peak. Reading an object of B bytes holds its .npy bytes and the array at once (2 B,
then B); writing one holds its bytes as they grow and one chunk of numpy's 16 MiB copy buffer
(`write_peak`). A warm function keeps the training data it read (`get_cached`); the formula
counts a cold one, which also holds the data's bytes while it reads it. With

    n_x                     the values of one example (12,288 for the 64 x 64 pictures)
    M, V, T                 the training, validation and test examples
    m                       the examples of one step: the batch size, or M
    n_l, r_l                the neurons of layer l and of its largest shard (min(n_l, npt))
    W_l = r_l n_(l-1)       the floats of one shard's weights; 8 bytes each

the largest terms are: ForwardLinear holds A[l-1] (n_(l-1) m, twice while its shards are joined;
for layer 1 the data, n_x M, and the batch, n_x m) and Z (r_l m); Backward holds dA (its rows
r_l m, and one partial of the next layer, n_l m, as it reads them one by one), A[l-1] as above,
dZ, dW (W_l) and its partial dA[l-1] (n_(l-1) m) while it writes it; Update holds W_l, dW_l,
the optimizer's state and its temporaries: 4 W_l in all for gradient descent, 5 for momentum
and RMSprop, 8 for Adam (W, dW, v, s, and v's and s's new values and bias-corrected copies);
Init holds the uploads, the data (n_x (M + V + T)) and every layer's weights (sum of
n_l n_(l-1)) plus the widest layer drawn again while it is scaled; Commit (at an epoch's end,
with a validation set) and Evaluate hold every layer's weights, the data they predict on and
the forward pass; Predict holds a trained model twice (model.npz's bytes and its arrays).
Init also writes the two h5 files of the cat/non-cat set to /tmp (`check_storage`).

tests/unit/test_memory.py runs every stage on stores that keep objects as bytes, as S3 does,
and checks these formulas against the peak that `tracemalloc` measures (numpy reports its
arrays to it) within 20 %, over several shapes.

The runtime's own footprint, RUNTIME_MB, comes on top: a Python process with numpy, boto3 and
every handler module imported, its stage context made (the S3, DynamoDB and Step Functions
clients) and one matrix product done has a peak resident set (`resource.getrusage`'s
`ru_maxrss`) of 95 MB (Python 3.11 on x86_64, one BLAS thread); 100 MB is kept for it.

The local engine checks every invocation against this prediction (the event names the run,
layer and shard; the run's record names its network and data): arithmetic on a few numbers, so
the engine runs as fast as without it. Measuring each invocation instead (tracemalloc) would
slow every allocation of every handler several times over, and the process's resident set is
shared by every handler running side by side, so it cannot tell one invocation's peak.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from snn.parameters import Parameters

FLOAT = 8  # bytes of a float64
MB = 1024 * 1024  # Lambda's MemorySize counts MiB
CHUNK = 16 * MB  # numpy writes an array to a file-like object in pieces of this size
RUNTIME_MB = 100  # the runtime's own footprint (see the module's docstring)

# The stages of a run and the functions (template.yaml's logical ids) that run them.
FUNCTIONS = {
    "Init": "InitFunction",
    "ForwardLinear": "ForwardLinearFunction",
    "Activation": "ActivationFunction",
    "Loss": "LossFunction",
    "Backward": "BackwardFunction",
    "Update": "UpdateFunction",
    "Commit": "CommitFunction",
    "Evaluate": "EvaluateFunction",
    "Predict": "PredictFunction",
}
# The stages that run once per shard of a layer.
PER_LAYER = ("ForwardLinear", "Activation", "Backward", "Update")


@dataclass(frozen=True)
class Data:
    """The shape of a run's data, as Init keeps it: n_x values per example; `examples` training
    examples (the validation set held out), `valid` validation and `test` test examples;
    `upload_bytes`, the size of the uploads Init reads."""

    n_x: int
    examples: int
    valid: int = 0
    test: int = 0
    upload_bytes: int = 0


class _Tally:
    """Bytes held now and the most held at any moment."""

    def __init__(self) -> None:
        self.now = 0
        self.peak = 0

    def hold(self, n: int) -> None:
        self.now += n
        self.peak = max(self.peak, self.now)

    def free(self, n: int) -> None:
        self.now -= n

    def passing(self, n: int) -> None:
        """A temporary of n bytes, freed at once."""
        self.peak = max(self.peak, self.now + n)

    def read(self, n: int) -> None:
        """An object of n bytes read: its bytes and its array, then the array."""
        self.passing(2 * n)
        self.hold(n)

    def write(self, n: int) -> None:
        """An array of n bytes written: its .npy bytes grow chunk by chunk, each chunk a copy."""
        self.passing(write_peak(n))


def write_peak(n: int) -> int:
    """The peak of writing n bytes of an array as .npy bytes: numpy copies it in chunks of
    CHUNK bytes, each appended to the bytes so far (the last full chunk, or the last one)."""
    full, last = divmod(n, CHUNK)
    return max(n + last, (full + 1) * CHUNK if full else 0)


def _rows(p: Parameters, layer: int) -> int:
    return min(p.neurons_per_task, p.neurons[layer - 1])


def _dims(p: Parameters, data: Data) -> list[int]:
    return [data.n_x, *p.neurons]


def _step_examples(p: Parameters, data: Data) -> int:
    size = p.training.batch_size
    return data.examples if size is None else min(size, data.examples)


def _layer_input(t: _Tally, p: Parameters, data: Data, layer: int) -> None:
    """A[layer - 1]: the training data (cold: read) and the batch's columns, or the previous
    layer's shards joined."""
    m = _step_examples(p, data)
    if layer == 1:
        t.read(FLOAT * data.n_x * data.examples)
        if p.training.batch_size is not None:
            t.hold(FLOAT * data.n_x * m)
        return
    n_prev = p.neurons[layer - 2]
    for s in p.shards(layer - 1):
        t.read(FLOAT * (s.hi - s.lo) * m)
    if len(p.shards(layer - 1)) > 1:
        t.hold(FLOAT * n_prev * m)  # joined; the shards are let go
        t.free(FLOAT * n_prev * m)


def _weights(t: _Tally, p: Parameters, data: Data) -> None:
    """Every layer's W and b, each joined from its shards."""
    dims = _dims(p, data)
    for layer in range(1, p.layers + 1):
        n, n_prev = dims[layer], dims[layer - 1]
        for s in p.shards(layer):
            t.read(FLOAT * (s.hi - s.lo) * n_prev)
        if len(p.shards(layer)) > 1:
            t.passing(FLOAT * n * n_prev)
        t.hold(FLOAT * n)


def _forward(t: _Tally, p: Parameters, data: Data, examples: int) -> None:
    """The whole network's forward pass over `examples` examples: each layer's Z and A pass
    while the layer before's A is held."""
    dims = _dims(p, data)
    held = 0
    for layer in range(1, p.layers + 1):
        n = dims[layer]
        t.passing(FLOAT * n * examples * 2)  # Z, then A (and an activation's temporary)
        t.free(held)
        held = FLOAT * n * examples
        t.hold(held)
    t.free(held)


# Temporaries of an activation and of its derivative, in arrays of Z's size.
_ACTIVATION_TEMPS = {"relu": 0, "tanh": 0, "sigmoid": 1}
_BACKWARD_TEMPS = {"relu": 1, "tanh": 1, "sigmoid": 2}
# Arrays of a shard's size an optimizer holds at its peak, besides the weights and gradient.
_OPTIMIZER_ARRAYS = {"gd": 1, "momentum": 1, "rmsprop": 1, "adam": 3}


def forward_linear(p: Parameters, data: Data, layer: int) -> int:
    r, m, n_prev = _rows(p, layer), _step_examples(p, data), _dims(p, data)[layer - 1]
    t = _Tally()
    t.read(FLOAT * r * n_prev)
    t.read(FLOAT * r)
    _layer_input(t, p, data, layer)
    t.hold(FLOAT * r * m)  # W . A_prev
    t.hold(FLOAT * r * m)  # + b
    t.free(FLOAT * r * m)
    t.passing(r * m)  # isfinite
    t.write(FLOAT * r * m)
    return t.peak


def activation(p: Parameters, data: Data, layer: int) -> int:
    r, m = _rows(p, layer), _step_examples(p, data)
    t = _Tally()
    t.read(FLOAT * r * m)
    t.passing(FLOAT * r * m * _ACTIVATION_TEMPS[p.activations[layer - 1]])
    t.hold(FLOAT * r * m)
    t.write(FLOAT * r * m)
    return t.peak


def loss(p: Parameters, data: Data) -> int:
    m = _step_examples(p, data)
    t = _Tally()
    t.read(FLOAT * m)  # A[L]
    t.read(FLOAT * data.examples)  # Y
    if p.training.batch_size is not None:
        t.hold(FLOAT * m)
    if p.training.l2:
        _weights(t, p, data)
        t.passing(FLOAT * max(a * b for a, b in zip(p.neurons, _dims(p, data), strict=False)))
    t.passing(FLOAT * m * 4)  # the cost's and the gradient's temporaries
    t.hold(FLOAT * m)
    t.write(FLOAT * m)
    return t.peak


def backward(p: Parameters, data: Data, layer: int) -> int:
    r, m = _rows(p, layer), _step_examples(p, data)
    n, n_prev = p.neurons[layer - 1], _dims(p, data)[layer - 1]
    g = p.activations[layer - 1]
    t = _Tally()
    if layer == p.layers:
        t.read(FLOAT * m)  # dA[L], its rows a view
    else:
        t.passing(2 * FLOAT * n * m)  # one partial of the next layer, read ...
        t.passing(FLOAT * n * m + FLOAT * r * m)  # ... and added to the sum of its rows
        t.hold(FLOAT * r * m)
    t.read(FLOAT * r * m)  # Z
    t.read(FLOAT * r * n_prev)  # W
    t.passing(FLOAT * r * m * _BACKWARD_TEMPS[g])
    t.hold(FLOAT * r * m)  # dZ
    _layer_input(t, p, data, layer)
    t.hold(FLOAT * r * n_prev)  # dW
    if p.training.l2:
        t.passing(FLOAT * r * n_prev)
    t.passing(r * n_prev)  # isfinite
    t.write(FLOAT * r * n_prev)
    if layer > 1:
        t.hold(FLOAT * n_prev * m)  # this shard's part of dA[l-1]
        t.passing(n_prev * m)
        t.write(FLOAT * n_prev * m)
    # the neurons' statistics, at a sampled epoch (every run's first): A and Z's spread
    t.passing(FLOAT * r * m * (2 + _ACTIVATION_TEMPS[g]))
    return t.peak


def update(p: Parameters, data: Data, layer: int) -> int:
    r, n_prev = _rows(p, layer), _dims(p, data)[layer - 1]
    w = FLOAT * r * n_prev
    optimizer = p.training.optimizer.name
    t = _Tally()
    t.read(w)  # W
    t.read(w)  # dW
    if optimizer != "gd":
        t.read(w * len(p.training.optimizer.state))  # the optimizer's state of W
    t.passing(w * (_OPTIMIZER_ARRAYS[optimizer] + 1))
    return t.peak


def commit(p: Parameters, data: Data) -> int:
    """At an epoch's end with a validation set: the next weights, the validation data and a
    forward pass over it; otherwise a few keys."""
    t = _Tally()
    if p.training.validation is not None and data.valid:
        _weights(t, p, data)
        t.read(FLOAT * data.n_x * data.valid)
        t.read(FLOAT * data.valid)
        _forward(t, p, data, data.valid)
    return t.peak


def evaluate(p: Parameters, data: Data) -> int:
    """The model's weights, every split's data (a warm function keeps each), a forward pass
    over each, model.npz and the neurons' statistics."""
    t = _Tally()
    _weights(t, p, data)
    for examples in (data.examples, data.valid, data.test):
        if examples:
            t.read(FLOAT * data.n_x * examples)
            t.read(FLOAT * examples)
            _forward(t, p, data, examples)
    written = 0  # model.npz so far: each array's .npy bytes made, then copied into it
    for n_prev, n in zip(_dims(p, data), p.neurons, strict=False):
        for size in (FLOAT * n * n_prev, FLOAT * n):
            t.passing(written + write_peak(size))
            t.passing(written + 2 * size)
            written += size
    from snn.stages.training import NEURON_SAMPLES, NEURON_STATS

    samples = min(p.epochs, NEURON_SAMPLES + 1)
    stats = FLOAT * len(NEURON_STATS) * samples * max(p.neurons)
    t.passing(3 * stats)
    return t.peak


def predict(p: Parameters, data: Data) -> int:
    """A trained run's model.npz read (its bytes, then every array of it, each checked finite)
    to classify one picture."""
    sizes = [
        size
        for n_prev, n in zip(_dims(p, data), p.neurons, strict=False)
        for size in (FLOAT * n * n_prev, FLOAT * n)
    ]
    t = _Tally()
    t.hold(sum(sizes))  # model.npz
    for size in sizes:
        t.hold(size)  # an array's room, filled piece by piece through a buffer
        t.passing(min(size, READ_CHUNK) * 2)
        t.passing(size // FLOAT)  # isfinite
    return t.peak


READ_CHUNK = MB  # the pieces an .npz member is read in


def init(p: Parameters, data: Data) -> int:
    """The uploads, the data set decoded (its widest split converted once more), the splits
    kept, every layer's weights (each drawn, then scaled into a new array), and each object
    written."""
    dims = _dims(p, data)
    whole = data.examples + data.valid
    t = _Tally()
    t.hold(data.upload_bytes)
    t.passing(FLOAT * data.n_x * max(whole, data.test))  # decoding
    t.hold(FLOAT * (data.n_x + 1) * (whole + data.test))
    if data.valid:
        t.hold(FLOAT * (data.n_x + 1) * whole)  # the training and validation columns, copied
    t.write(FLOAT * data.n_x * max(data.examples, data.valid, data.test))
    for layer in range(1, p.layers + 1):
        w = FLOAT * dims[layer] * dims[layer - 1]
        t.hold(w + FLOAT * dims[layer])  # drawn,
        t.passing(w)  # then scaled into a new array
    t.write(max(FLOAT * _rows(p, n) * dims[n - 1] for n in range(1, p.layers + 1)))
    return t.peak


def stage_bytes(stage: str, p: Parameters, data: Data, layer: int | None = None) -> int:
    """The working set of one invocation of `stage` (for a stage of a layer, of that layer's
    largest shard; of the most demanding layer when `layer` is None)."""
    if stage in PER_LAYER:
        fn = {
            "ForwardLinear": forward_linear,
            "Activation": activation,
            "Backward": backward,
            "Update": update,
        }[stage]
        layers = range(1, p.layers + 1) if layer is None else (layer,)
        return max(fn(p, data, n) for n in layers)
    fn1 = {
        "Init": init,
        "Loss": loss,
        "Commit": commit,
        "Evaluate": evaluate,
        "Predict": predict,
    }[stage]
    return fn1(p, data)


def working_sets(p: Parameters, data: Data) -> dict[str, tuple[int, int | None]]:
    """Each stage's largest working set, in bytes, and the layer where it is (None for a stage
    of the whole network)."""
    out: dict[str, tuple[int, int | None]] = {}
    for stage in FUNCTIONS:
        if stage in PER_LAYER:
            layer = max(
                range(1, p.layers + 1), key=lambda n, s=stage: stage_bytes(s, p, data, n)
            )
            out[stage] = (stage_bytes(stage, p, data, layer), layer)
        else:
            out[stage] = (stage_bytes(stage, p, data), None)
    return out


def over_limit(
    p: Parameters, data: Data, memory_mb: dict[str, int]
) -> tuple[str, int | None, int, int] | None:
    """The stage whose working set is the most over its function's memory (`memory_mb`: the
    MemorySize of each stage's function) less the runtime's footprint: (stage, layer, bytes
    needed, MB available), or None if every stage fits."""
    worst = None
    for stage, (need, layer) in working_sets(p, data).items():
        if stage not in memory_mb:
            continue
        available = memory_mb[stage] - RUNTIME_MB
        if need > available * MB and (worst is None or need / available > worst[0]):
            worst = (need / available, (stage, layer, need, available))
    return None if worst is None else worst[1]


def largest_fitting(p: Parameters, data: Data, memory_mb: dict[str, int]) -> int | None:
    """The largest neurons_per_task below the network's own at which every stage fits its
    function's memory and one step fits one execution's history (None if there is none)."""
    from dataclasses import replace

    from snn import epoch as epochs

    for n in range(p.neurons_per_task - 1, 0, -1):
        q = replace(p, neurons_per_task=n)
        events = epochs.events_per_step(q) + epochs.EXECUTION_FIXED_EVENTS
        if events > epochs.EXECUTION_EVENT_BUDGET:
            return None  # fewer neurons per task only means more events
        if over_limit(q, data, memory_mb) is None:
            return n
    return None


def check(p: Parameters, data: Data, memory_mb: dict[str, int], source: str = "") -> None:
    """Refuse (ParametersError, one line) a network of which some stage's working set is over
    its function's memory: the stage, the megabytes, and the largest neurons_per_task that
    fits."""
    from snn.errors import ParametersError

    over = over_limit(p, data, memory_mb)
    if over is None:
        return
    stage, layer, need, available = over
    where = f"{stage} (layer {layer})" if layer is not None else stage
    fits = largest_fitting(p, data, memory_mb)
    hint = (
        f'; "neurons_per_task": {fits} fits'
        if fits is not None
        else "; no neurons_per_task fits: narrow the layers or give the function more memory"
    )
    prefix = f"{source}: " if source else ""
    raise ParametersError(
        f"{prefix}{where} needs {need / MB:,.0f} MB at {p.neurons_per_task} neurons per task, "
        f"over the {available:,} MB its function has ({memory_mb[stage]:,} MB MemorySize less "
        f"{RUNTIME_MB} MB for the runtime){hint}"
    )


def check_storage(upload_bytes: int, ephemeral_mb: int) -> None:
    """Refuse h5 uploads that Init cannot write to its function's ephemeral storage (/tmp), where
    it writes them to read them."""
    from snn.errors import DataError

    if upload_bytes > ephemeral_mb * MB:
        raise DataError(
            f"Init writes the data's {upload_bytes / MB:,.0f} MB of h5 files to /tmp, over the "
            f"{ephemeral_mb:,} MB of its function's ephemeral storage (EphemeralStorage)"
        )
