"""The stores behind the key layout (`snn.keys`): matrices in S3 or in memory, the run table in
DynamoDB or in memory. Stages see only these interfaces, so every engine runs the same code."""

from snn.stores.clients import aws_client, reset_clients
from snn.stores.dynamo import DynamoRunTable
from snn.stores.matrices import (
    CorruptObject,
    MatrixStore,
    MemoryStore,
    MissingObject,
    S3Store,
    from_npy,
    to_npy,
)
from snn.stores.runs import (
    ConditionFailed,
    MemoryRunTable,
    RunTable,
    When,
    costs_in_order,
    new_record,
    now,
)

__all__ = [
    "ConditionFailed",
    "CorruptObject",
    "DynamoRunTable",
    "MatrixStore",
    "MemoryRunTable",
    "MemoryStore",
    "MissingObject",
    "RunTable",
    "S3Store",
    "When",
    "aws_client",
    "costs_in_order",
    "from_npy",
    "new_record",
    "now",
    "reset_clients",
    "to_npy",
]
