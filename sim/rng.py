"""Random streams: one root seed per run, named independent numpy Generators.

Each stream is derived from the root seed with :class:`numpy.random.SeedSequence`
and a spawn key computed from the stream's *name* (not from the order in which
streams are requested), so adding a stream, or drawing more numbers from one,
never shifts the numbers any other stream produces.
"""

from __future__ import annotations

import hashlib

import numpy as np

__all__ = ["Streams", "derive_seed", "MAX_SEED"]

MAX_SEED = 2**63 - 1


def _name_key(name: str) -> tuple[int, ...]:
    digest = hashlib.blake2b(name.encode(), digest_size=16).digest()
    return tuple(int.from_bytes(digest[i : i + 4], "little") for i in range(0, 16, 4))


def derive_seed(root: int, *names: str | int) -> int:
    """A child seed of ``root`` for a path of names (used for sweep replications)."""
    key: list[int] = []
    for name in names:
        key.extend(_name_key(str(name)))
    ss = np.random.SeedSequence(entropy=root, spawn_key=tuple(key))
    return int(ss.generate_state(2, dtype=np.uint32).view(np.uint64)[0] & MAX_SEED)


class Streams:
    """Named random streams of one run.

    >>> s = Streams(42)
    >>> float(s["latency"].random()) == float(Streams(42)["latency"].random())
    True
    """

    __slots__ = ("seed", "_streams")

    def __init__(self, seed: int) -> None:
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed <= MAX_SEED:
            raise ValueError(f"seed must be an integer in [0, 2**63-1], got {seed!r}")
        self.seed = int(seed)
        self._streams: dict[str, np.random.Generator] = {}

    def __getitem__(self, name: str) -> np.random.Generator:
        gen = self._streams.get(name)
        if gen is None:
            ss = np.random.SeedSequence(entropy=self.seed, spawn_key=_name_key(name))
            gen = np.random.Generator(np.random.PCG64(ss))
            self._streams[name] = gen
        return gen

    def names(self) -> list[str]:
        """Names of the streams used so far."""
        return sorted(self._streams)
