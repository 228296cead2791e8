"""Errors a user can fix. The CLI prints them on one line and exits with code 2."""


class BenchError(Exception):
    """Bad input: a suite file, a setting, a plugin name, an image folder, an array.

    The message names the file, key or plugin and says what was expected.
    """
