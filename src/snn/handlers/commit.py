"""Commit stage: advance the run to the next epoch (a duplicate commit is a no-op)."""

from snn import stages
from snn.handlers import stage

handler = stage("run_id", "epoch")(stages.commit)
