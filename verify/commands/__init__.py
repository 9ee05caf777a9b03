"""CLI sub-commands, one module each (see :mod:`verify.cli`)."""
