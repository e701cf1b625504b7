"""Error types and the record of skipped inputs shared by all loaders."""

from __future__ import annotations


class DataLayoutError(ValueError):
    """The root path does not hold the expected layout; the message says what was expected."""


class ImageDecodeError(ValueError):
    """One image file could not be read or decoded; the message names the file."""


Skip = tuple[str, str]
"""One skipped input: (where: a path, ``path:line`` or ``shard.tar::member``, reason)."""
