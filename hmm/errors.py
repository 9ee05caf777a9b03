"""The one project error type.

Every malformed input (HMM arrays, token sequences, files, command-line values) raises :class:`HmmtxError` with a
message that names the offending array, row, position or value. The CLI turns it into a single line on stderr and
exit status 2.
"""

from __future__ import annotations


class HmmtxError(ValueError):
    """Bad input to hmmtx: the message says what is wrong and where."""


__all__ = ["HmmtxError"]
