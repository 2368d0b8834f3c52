"""The one exception type users see: the CLI prints its message on one line and exits non-zero."""


class RsbenchError(Exception):
    """An error caused by input (a name, a file, a setting) that the user can fix."""
