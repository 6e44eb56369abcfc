"""Errors meant for the user of the command line or the pipelines: one clear line each."""


class SimDAError(Exception):
    """A problem with the user's input (files, arguments, device); shown without a traceback."""
