"""Matrices by key: in S3 as .npy objects (Lambda, local and AWS engines), or in a dictionary (the
direct engine). Both behave alike, so every engine runs the same stage code."""

from __future__ import annotations

import contextvars
import io
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar, Protocol

import numpy as np

from snn.errors import EventError
from snn.stores.clients import aws_client, invoked_as


def to_npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def from_npy(data: bytes, key: str = "object") -> np.ndarray:
    """An array from .npy bytes; anything else (pickled objects, garbage) is an error that names
    the key."""
    if not data.startswith(b"\x93NUMPY"):
        raise CorruptObject(f"{key} is not a readable .npy matrix (it does not start as one)")
    try:
        return np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise CorruptObject(f"{key} is not a readable .npy matrix ({exc})") from None


class MissingObject(EventError):
    """An input of a stage is not in the store (unknown run, or an epoch not reached yet)."""


class CorruptObject(EventError):
    """An object is in the store but is not what was written there."""


class MatrixStore(Protocol):
    def put(self, key: str, array: np.ndarray) -> None: ...
    def get(self, key: str) -> np.ndarray: ...
    def get_cached(self, key: str) -> np.ndarray: ...
    def put_bytes(self, key: str, data: bytes) -> None: ...
    def get_bytes(self, key: str, max_bytes: int | None = None) -> bytes: ...
    def get_many(self, keys: list[str]) -> list[np.ndarray]: ...
    def keys_under(self, prefix: str) -> set[str]: ...
    def delete_prefix(self, prefix: str) -> int: ...


class MemoryStore:
    """Matrices in a dictionary. Arrays are never mutated by the stages, so no copies are made;
    what S3 would make of an object is made of it only when it is read the other way (the
    bytes of an array, the array of bytes), so both stores answer every read alike."""

    def __init__(self) -> None:
        self.items: dict[str, np.ndarray | bytes] = {}

    def _item(self, key: str) -> np.ndarray | bytes:
        try:
            return self.items[key]
        except KeyError:
            raise MissingObject(f"no object {key}") from None

    def put(self, key: str, array: np.ndarray) -> None:
        self.items[key] = array

    def get(self, key: str) -> np.ndarray:
        item = self._item(key)
        return from_npy(item, key) if isinstance(item, bytes) else item

    get_cached = get

    def get_many(self, keys: list[str]) -> list[np.ndarray]:
        return [self.get(k) for k in keys]

    def put_bytes(self, key: str, data: bytes) -> None:
        self.items[key] = data

    def get_bytes(self, key: str, max_bytes: int | None = None) -> bytes:
        item = self._item(key)
        data = item if isinstance(item, bytes) else to_npy(item)
        return data if max_bytes is None else data[: max_bytes + 1]

    def keys_under(self, prefix: str) -> set[str]:
        return {k for k in self.items if k.startswith(prefix)}

    def delete_prefix(self, prefix: str) -> int:
        doomed = self.keys_under(prefix)
        for k in doomed:
            del self.items[k]
        return len(doomed)


class S3Store:
    """Matrices as .npy objects in one bucket. Immutable inputs are kept in memory by key, as a
    warm Lambda container keeps them between invocations."""

    # by function too: the local engine runs every function in one process (`invoked_as`)
    _cache: ClassVar[dict[tuple[str | None, str, str], np.ndarray]] = {}
    _cache_lock = threading.Lock()
    MAX_CACHED = 16
    READERS = 32  # concurrent reads of get_many (boto3 clients are thread-safe)

    def __init__(self, bucket: str, client: Any = None) -> None:
        self.bucket = bucket
        self.client = client or aws_client("s3")

    def put_bytes(self, key: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=key, Body=data)

    def get_bytes(self, key: str, max_bytes: int | None = None) -> bytes:
        """The object's bytes; with `max_bytes`, at most one byte more than that is read (so a
        caller can tell an object over its limit without reading all of it)."""
        from botocore.exceptions import ClientError

        try:
            body = self.client.get_object(Bucket=self.bucket, Key=key)["Body"]
        except self.client.exceptions.NoSuchKey:
            raise MissingObject(f"no object {key} in bucket {self.bucket}") from None
        except ClientError as exc:
            # Without s3:ListBucket, S3 answers a missing key with 403 AccessDenied, not 404, and
            # says no more than "Access Denied". A request that the function's policies refuse
            # names the caller, the action and the resource: that is access denied, and it
            # propagates as S3 answered it.
            error = exc.response.get("Error", {})
            if error.get("Code") != "AccessDenied" or "not authorized" in error.get("Message", ""):
                raise
            raise MissingObject(
                f"no object {key} in bucket {self.bucket} (access denied: S3's answer for a "
                "missing key to a function that may not list the bucket)"
            ) from None
        try:
            return body.read() if max_bytes is None else body.read(max_bytes + 1)
        finally:
            body.close()

    def put(self, key: str, array: np.ndarray) -> None:
        self.put_bytes(key, to_npy(array))

    def get(self, key: str) -> np.ndarray:
        return from_npy(self.get_bytes(key), key)

    def get_many(self, keys: list[str]) -> list[np.ndarray]:
        """Many objects, read side by side: latency, not bandwidth, bounds small reads."""
        if len(keys) <= 1:
            return [self.get(k) for k in keys]
        with ThreadPoolExecutor(max_workers=min(self.READERS, len(keys))) as pool:
            # each read in a copy of the caller's context, as if the caller made it
            reads = [pool.submit(contextvars.copy_context().run, self.get, k) for k in keys]
            return [r.result() for r in reads]

    def get_cached(self, key: str) -> np.ndarray:
        cache_key = (invoked_as.get(), self.bucket, key)
        hit = self._cache.get(cache_key)
        if hit is None:
            hit = self.get(key)
            hit.setflags(write=False)
            with self._cache_lock:
                if len(self._cache) >= self.MAX_CACHED:
                    self._cache.clear()
                self._cache[cache_key] = hit
        return hit

    def keys_under(self, prefix: str) -> set[str]:
        found: set[str] = set()
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
            found.update(o["Key"] for o in page.get("Contents", []))
        return found

    def delete_prefix(self, prefix: str) -> int:
        doomed = sorted(self.keys_under(prefix))
        for i in range(0, len(doomed), 1000):
            self.client.delete_objects(
                Bucket=self.bucket,
                Delete={"Objects": [{"Key": k} for k in doomed[i : i + 1000]], "Quiet": True},
            )
        return len(doomed)

    @classmethod
    def forget_cached(cls) -> None:
        with cls._cache_lock:
            cls._cache.clear()
