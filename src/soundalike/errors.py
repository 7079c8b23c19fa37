"""The exceptions soundalike raises on purpose.

Every error a user can cause (a bad file, a bad setting, missing weights) is a
:class:`SoundalikeError` whose message says what happened, to what, and what to do.
The CLI prints such an error as one line and exits non-zero; anything else is a bug.
"""

from __future__ import annotations


class SoundalikeError(Exception):
    """Base class of every error soundalike raises deliberately."""


class AudioDecodeError(SoundalikeError):
    """Input that cannot be decoded as audio: unreadable, empty, truncated or not audio.

    Parameters
    ----------
    source : str
        The path, or a short description such as ``"<bytes: 1234>"`` for in-memory input.
    reason : str
        What went wrong, in words a user can act on.
    """

    def __init__(self, source: str, reason: str):
        self.source = source
        self.reason = reason
        super().__init__(f"cannot decode {source}: {reason}")


class ParameterError(SoundalikeError, ValueError):
    """An argument out of its valid range (a negative duration, an unknown name, ...)."""


class ConfigError(SoundalikeError):
    """A configuration file or ``--set`` override that is missing, malformed or inconsistent."""


class ModelWeightsError(SoundalikeError):
    """Model weights that are missing, unreadable or do not match what is expected."""
