"""The cache lock: two workers that need the same cached model never both train it."""
from __future__ import annotations

import fcntl
from contextlib import contextmanager
from typing import Iterator

from ..data.locate import cache_dir


@contextmanager
def cache_lock(key: str) -> Iterator[None]:
    """An exclusive lock on cache entry ``key`` (``$CORRECTIVE_CACHE_DIR/locks/<key>.lock``): the first worker
    trains the model, the others wait and then read it from the cache. flock is released when its holder dies."""
    path = cache_dir() / "locks" / f"{key}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
