"""Engines run one training: `direct` (a plain loop over the stages), `local` (the state machine
on an embedded emulator) and `aws` (a deployed stack). All take a `RunSpec` and return the same
`RunResult`, which the run folder writes."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from snn.engines.progress import ProgressWriter
    from snn.parameters import Parameters
    from snn.run_folder import RunFolder
    from snn.sources import DataSource

# Called after every committed epoch with (epoch, cost).
OnEpoch = Callable[[int, float], None]

ENGINES = ("local", "direct", "aws")


@dataclass
class RunSpec:
    """One run to train: the network, its data, its id, and where to report progress (a
    callback, the run folder's progress.json) and keep what a later process needs to resume."""

    parameters: Parameters
    data: Path  # the data: a folder of the two h5 files or of pictures, or an .npz file
    run_id: str
    on_epoch: OnEpoch | None = None
    folder: RunFolder | None = None
    progress: ProgressWriter | None = None
    positive: str | None = None  # the positive class of a folder of pictures

    def source(self) -> DataSource:
        from snn.sources import open_source

        return open_source(self.data, self.positive)

    def epoch_done(self, epoch: int, cost: float) -> None:
        if self.progress:
            self.progress.epoch_done(epoch, cost)
        if self.on_epoch:
            self.on_epoch(epoch, cost)
