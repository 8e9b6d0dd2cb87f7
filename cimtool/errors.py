"""The one exception type for user mistakes: the CLI prints its message on one line, exit 2."""


class CimtoolError(Exception):
    """Bad input or a refused parameter. The message says what and where, in one line."""
