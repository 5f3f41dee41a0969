"""activation stage: one shard of neurons of one layer, for one epoch."""

from snn import stages
from snn.handlers import stage

handler = stage("run_id", "epoch", "layer", "shard")(stages.activation)
