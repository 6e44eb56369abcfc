"""Errors meant for the user of the command line or the pipelines: one clear line each."""


class SimDAError(ValueError):
    """A problem with the user's input (files, arguments, values, device), named in one line;
    the ``simda`` command shows it without a traceback. A ``ValueError``, as diffusers raises
    for bad arguments."""
