"""The one user-facing error type of rho-eval: the CLI prints its message and exits 2, never a traceback."""


class EvalError(Exception):
    """A user mistake or an unusable input (bad flag, missing file, unreachable endpoint)."""
