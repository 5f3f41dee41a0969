"""Engines run one training: `direct` (a plain loop over the stages), `local` (the state machine
on an embedded emulator) and `aws` (a deployed stack). All write the same run folder."""

from collections.abc import Callable

# Called after every committed epoch with (epoch, cost).
OnEpoch = Callable[[int, float], None]

ENGINES = ("local", "direct", "aws")
