"""Errors that the CLI turns into a one-line message and exit status 2."""


class AirfoilError(Exception):
    """Bad input or an impossible request; the message names the file, field or op and what was expected."""
