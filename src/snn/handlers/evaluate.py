"""Evaluate stage: accuracies of the trained network, and the model as one object in S3."""

from snn import stages
from snn.handlers import stage

handler = stage("run_id")(stages.evaluate)
