"""RecordFailure stage: mark the run FAILED with the error the state machine caught."""

from snn import stages
from snn.handlers import stage

handler = stage("run_id", "error", "cause")(stages.record_failure)
