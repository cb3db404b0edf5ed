"""One exception type for bad input: its message is a single line a researcher can act on."""

from __future__ import annotations


class LabError(ValueError):
    """A user-facing error (bad config, missing artefact, unreachable service). Jobs print it as one line."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))
