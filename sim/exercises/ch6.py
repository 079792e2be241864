"""Chapter 6's exercises."""

from __future__ import annotations
