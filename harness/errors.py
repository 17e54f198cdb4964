"""One exception type for problems the user can fix: the CLI prints its message as one line."""


class BenchError(Exception):
    """A user-fixable problem; the message names the file/record/name and the fix."""
