"""Chapter 5's exercises."""

from __future__ import annotations
