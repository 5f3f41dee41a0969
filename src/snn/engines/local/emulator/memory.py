"""Keeping the emulator's memory bounded over a long run. moto keeps, for its dashboard, every S3
object ever written (deleted ones too, undisposed), every version of every DynamoDB item, every
ACL and every interpreter thread that has finished. Deleted objects are disposed of and
forgotten, the rest dropped."""

from __future__ import annotations

from moto.dynamodb.models.dynamo_type import Item
from moto.s3.models import FakeAcl, FakeGrant, FakeGrantee, FakeKey, s3_backends
from moto.stepfunctions.parser.utils import TMP_THREADS

from snn.engines.local.emulator import ACCOUNT


class Compactor:
    """`compact()` at intervals: a key is tracked a moment before it enters its bucket, so it is
    disposed of only if it was already out of every bucket at the previous compaction (a deleted
    key never returns: writing the name again makes a new key)."""

    def __init__(self) -> None:
        self._outside_before: set[int] = set()
        self.disposed = 0

    def compact(self) -> None:
        tracked = FakeKey.instances_tracked
        candidates = list(tracked)  # list() copies are atomic
        buckets = list(s3_backends[ACCOUNT]["aws"].buckets.values())
        live = {
            id(key)
            for bucket in buckets
            for versions in list(dict.values(bucket.keys))
            for key in versions
        }
        outside = {id(key) for key in candidates if id(key) not in live}
        doomed = outside & self._outside_before
        self._outside_before = outside - doomed
        if doomed:
            for key in candidates:
                if id(key) in doomed:
                    key.dispose()
            tracked[:] = [key for key in tracked if id(key) not in doomed]
            self.disposed += len(doomed)
        TMP_THREADS[:] = [t for t in list(TMP_THREADS) if t.is_alive()]
        # Each update of an item and each object's ACL adds tracked instances too; nothing
        # needs disposing: tables and keys hold the live ones.
        for model in (Item, FakeAcl, FakeGrant, FakeGrantee):
            model.instances_tracked.clear()  # type: ignore[attr-defined]

    @staticmethod
    def tracked_counts() -> dict[str, int]:
        """How many instances moto tracks of each kind (what compaction keeps bounded)."""
        return {
            "s3_keys": len(FakeKey.instances_tracked),
            "dynamodb_items": len(Item.instances_tracked),  # type: ignore[attr-defined]
            "threads": len(TMP_THREADS),
        }
