"""A node's disk: a dict whose contents survive a hard crash only as far as they were flushed.

Protocols use ``self.disk`` as a plain dict (``disk[k] = v``, ``disk.get``,
``disk.setdefault("log", []).append(...)``, lists and dicts changed in place).
What a hard crash leaves behind is decided by the node's fsync policy
(:mod:`sim.fsync`):

* ``always``: every write is durable at once; a crash changes nothing. The node's
  disk is then a plain ``dict`` (a ``Disk`` would cost a little even intercepting
  nothing: the interpreter's fast paths for subscripts take exact dicts only).
* ``interval`` and ``never``: the durable image is a deep copy of the dict taken at
  the last :meth:`Disk.sync` (the node's periodic flush, or a clean stop). A deep
  copy, because protocols change what they stored in place (a Raft log is appended
  to): a shallow image would move with them. :meth:`Disk.lose_unsynced` puts the
  image back, as a machine that lost its page cache would find its disk.

The copy (:func:`snapshot`) copies containers (dict, list, set, deque, tuples that
hold one) and shares values: numbers, strings, enums, frozen dataclasses and tuples
of values, which nobody changes in place; anything else goes through
:func:`copy.deepcopy`. A log of frozen records then costs one list copy per flush,
not one deep copy per record.
"""

from __future__ import annotations

import copy
import enum
from collections import deque
from typing import Any

from ..fsync import ALWAYS, FsyncPolicy

__all__ = ["Disk", "snapshot"]

_VALUES: set[type] = {int, float, complex, str, bytes, bool, type(None), range, frozenset}
_FROZEN: dict[type, bool] = {}


_PLAIN: dict[type, tuple[str, ...] | None] = {}
_CUSTOM_COPY = ("__deepcopy__", "__reduce__", "__reduce_ex__", "__getstate__", "__setstate__", "__copy__")


def _plain_layout(cls: type) -> tuple[str, ...] | None:
    """The slots of a plain class (copied attribute by attribute, ``__dict__`` included), or None for a class
    that says how to copy itself (it goes through :func:`copy.deepcopy`)."""
    if cls in _PLAIN:
        return _PLAIN[cls]
    layout: tuple[str, ...] | None = None
    if not any(getattr(cls, name, None) is not getattr(object, name, None) for name in _CUSTOM_COPY) \
            and getattr(cls, "__new__", None) is getattr(object, "__new__", None):
        slots: list[str] = []
        for klass in cls.__mro__:
            declared = klass.__dict__.get("__slots__", ())
            slots += [declared] if isinstance(declared, str) else list(declared)
        layout = tuple(slots)
    _PLAIN[cls] = layout
    return layout


def _is_value_class(cls: type) -> bool:
    """An enum or a frozen dataclass: its instances are shared, not copied."""
    known = _FROZEN.get(cls)
    if known is None:
        params = getattr(cls, "__dataclass_params__", None)
        known = _FROZEN[cls] = issubclass(cls, enum.Enum) or (params is not None and params.frozen)
    return known


def snapshot(obj: Any, values: dict[int, Any] | None = None) -> Any:
    """A copy of ``obj`` that no later in-place change of ``obj`` reaches (see the module docstring).

    ``values`` remembers, by id, the tuples found to hold only values, so that the next
    snapshot of the same disk shares them without looking inside again (it keeps them
    alive, so an id is never reused while it is in there).
    """
    return _copy(obj, {}, {} if values is None else values)


def _copy_items(items: list[Any], memo: dict[int, Any], values: dict[int, Any]) -> None:
    """Copy, in place, the members of ``items`` (a fresh list) that are not known values.

    A log is mostly records already known to be values, with new ones at its end: find
    the unknown ones at C speed, then walk back from the end only until every one has
    been met, unless one of them had to be copied (it may appear again earlier).
    """
    unknown = set(map(id, items)).difference(values)
    if not unknown:
        return
    pending = set(unknown)
    shared = True
    for i in range(len(items) - 1, -1, -1):
        x = items[i]
        xid = id(x)
        if xid not in unknown:
            continue
        copied = _copy(x, memo, values)
        if copied is x:
            values[xid] = x  # a value (numbers and strings too): next time it is known
        else:
            items[i] = copied
            shared = False
        pending.discard(xid)
        if not pending and shared:
            return


def _copy(obj: Any, memo: dict[int, Any], values: dict[int, Any]) -> Any:
    cls = type(obj)
    if cls in _VALUES:
        return obj
    oid = id(obj)
    if oid in values:
        return obj
    done = memo.get(oid)
    if done is not None:
        return done
    out: Any
    if cls is list:
        out = memo[oid] = list(obj)
        _copy_items(out, memo, values)
    elif cls is dict:
        out = memo[oid] = {}
        for k, v in obj.items():
            out[k] = _copy(v, memo, values)
    elif cls is set:
        out = memo[oid] = set(obj)  # members are hashable, hence values
    elif cls is deque:
        out = memo[oid] = deque((_copy(x, memo, values) for x in obj), obj.maxlen)
    elif isinstance(obj, tuple):
        items = [_copy(x, memo, values) for x in obj]
        if all(a is b for a, b in zip(items, obj)):
            out = values[oid] = obj
        else:
            out = memo[oid] = tuple(items) if cls is tuple else cls._make(items) if hasattr(cls, "_make") \
                else cls(items)
    elif _is_value_class(cls):
        out = obj
    elif (layout := _plain_layout(cls)) is not None:
        out = memo[oid] = object.__new__(cls)
        for name in layout:
            if name == "__dict__":
                continue
            try:
                value = getattr(obj, name)
            except AttributeError:
                continue
            object.__setattr__(out, name, _copy(value, memo, values))
        attrs = getattr(obj, "__dict__", None)
        if attrs is not None:
            out.__dict__.update({k: _copy(v, memo, values) for k, v in attrs.items()})
    else:
        out = copy.deepcopy(obj, memo)
    return out


class Disk(dict[str, Any]):
    """A dict with a durable image kept according to ``policy`` (see the module docstring).

    ``syncs`` counts the flushes that copied the disk, ``rollbacks`` the hard
    crashes that put the durable image back (both stay 0 under ``always``).
    """

    __slots__ = ("policy", "_image", "_values", "syncs", "rollbacks")

    def __init__(self, policy: FsyncPolicy = ALWAYS) -> None:
        super().__init__()
        self.policy = policy
        self._image: dict[str, Any] | None = None if policy.always else {}
        self._values: dict[int, Any] = {}  # tuples known to hold only values (see snapshot)
        self.syncs = 0
        self.rollbacks = 0

    def sync(self) -> None:
        """Make everything written so far durable (fsync)."""
        if self._image is not None:
            self._image = snapshot(dict(self), self._values)
            self.syncs += 1

    def lose_unsynced(self) -> None:
        """A hard crash: the contents become the durable image; what was never synced is gone."""
        image = self._image
        if image is None:
            return
        self.clear()
        self.update(image)
        self._image = snapshot(image, self._values)  # the node changes what it reads back in place
        self.rollbacks += 1

    @property
    def durable(self) -> dict[str, Any]:
        """What a hard crash now would leave (the dict itself under ``always``; do not change it)."""
        return dict(self) if self._image is None else self._image

    def __repr__(self) -> str:
        return f"Disk({dict.__repr__(self)}, fsync={self.policy})"
