"""The one error type of the codec."""

from __future__ import annotations

__all__ = ["CodecError"]


class CodecError(ValueError):
    """A payload is malformed, truncated or corrupted, or a tensor cannot be packed.

    The message says what was wrong, what was expected and what was found. It is a ``ValueError``
    so callers that guard a message boundary with ``except ValueError`` also catch it.
    """
