"""Config families picked by a tag key: ``protocol.name`` and ``faults.schedule[i].kind``."""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Mapping
from typing import Any, ClassVar

from .config import build, to_plain
from .errors import ScenarioError

__all__ = ["Tagged"]


class Tagged:
    """Base of a family of frozen config dataclasses selected by ``tag_key``.

    Subclasses set ``tag`` and register with ``@Family.register``. A family may
    name modules to import before looking a tag up (``builtin_modules``), so
    built-in members register themselves without import cycles.
    """

    tag_key: ClassVar[str] = "kind"
    tag: ClassVar[str] = ""
    builtin_modules: ClassVar[tuple[str, ...]] = ()
    _members: ClassVar[dict[str, type]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "_members" not in cls.__dict__ and not any("_members" in b.__dict__ for b in cls.__mro__[1:]):
            cls._members = {}

    @classmethod
    def register(cls, member: Any) -> Any:
        if not member.tag:
            raise TypeError(f"{member.__name__} needs a non-empty 'tag'")
        cls._members[member.tag] = member
        return member

    @classmethod
    def members(cls) -> dict[str, type]:
        for module in cls.builtin_modules:
            importlib.import_module(module)
        return dict(cls._members)

    @classmethod
    def lookup(cls, tag: str) -> type | None:
        """The member registered as ``tag`` (``None``: no such member)."""
        return cls.members().get(tag)

    @classmethod
    def _unknown_hint(cls) -> str:
        return ""

    @classmethod
    def from_plain(cls, value: Any, path: str) -> Any:
        if isinstance(value, cls):
            return value
        if not isinstance(value, Mapping):
            raise ScenarioError(path, f"must be a table with a {cls.tag_key!r} key, got {type(value).__name__}")
        tag = value.get(cls.tag_key)
        if cls.tag and tag is None:  # a concrete member used directly
            tag = cls.tag
        member = cls.lookup(tag) if isinstance(tag, str) else None
        if member is None:
            raise ScenarioError(
                f"{path}.{cls.tag_key}" if path else cls.tag_key,
                f"must be one of {', '.join(sorted(cls.members()))}, got {tag!r}{cls._unknown_hint()}",
            )
        if cls.tag and member is not cls:
            raise ScenarioError(f"{path}.{cls.tag_key}", f"must be {cls.tag!r}, got {tag!r}")
        data = {k: v for k, v in value.items() if k != cls.tag_key}
        return build(member, data, path)

    def to_plain(self) -> dict[str, Any]:
        out: dict[str, Any] = {self.tag_key: self.tag}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if f.init and value is not None:
                out[f.name] = to_plain(value)
        return out
