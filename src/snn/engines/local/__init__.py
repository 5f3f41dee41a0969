"""The embedded local engine: the real state machine and the real handlers, on one machine,
with no AWS account and no Docker.

    embedded         the stack of template.yaml stood up in moto (bucket, table, functions,
                     state machine, the execution-status rule's function)
    lambda_service   every Lambda invoke served in-process, with fault injection
    iam              each function's policy from template.yaml, enforced on its every request
    emulator         every touch of moto's internals, behind one version gate
    quota            the history quota of a Standard execution, as AWS enforces it
    saved            the resume state, saved as the run goes and checked on the way back
    run              train and resume: start, follow, save, end
"""

from snn.engines.local.embedded import SESSION_HOOKS, EmbeddedStack
from snn.engines.local.lambda_service import ACCOUNT, REGION, LambdaService, invoked_function
from snn.engines.local.run import resume, saved_run, train

__all__ = [
    "ACCOUNT",
    "REGION",
    "SESSION_HOOKS",
    "EmbeddedStack",
    "LambdaService",
    "invoked_function",
    "resume",
    "saved_run",
    "train",
]
