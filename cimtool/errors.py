"""The one exception type for user mistakes: the CLI prints its message on one line, exit 2."""


class CimtoolError(Exception):
    """Bad input or a refused parameter. The message says what and where, in one line."""


class IncompleteRun(CimtoolError):
    """The run stopped before its end, for a reason the user can fix or retry (e.g. a cluster that
    lost too many workers). Unlike other user errors, the finished work is kept in the partial
    artifact, so that the same command computes only the rest."""
