"""Errors raised for bad user input.

Every problem with what a user hands to streammix (a table, a column, a
configuration key, a file) is raised as :class:`InputError`, whose message is a
single line naming the offending column, key or file and what is wrong with it.
The command line turns it into that line on standard error and exit code 2.
"""

from __future__ import annotations

__all__ = ["InputError"]


class InputError(ValueError):
    r"""Bad input: a missing or malformed column, key, value or file.

    Arguments:
        message: One line that names the column, key or file and the problem.

    Example:
        >>> try:
        ...     raise InputError("column 'phi1': 3 non-finite values")
        ... except InputError as error:
        ...     print(error)
        column 'phi1': 3 non-finite values
    """

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))
