"""The workflows, in plain Python: replay, demo, train, evaluate, refresh, monitor, precompute,
produce, the local stack and its demo.

A job takes the settings (and a ``progress`` flag for bars and narration on stderr), does the
work through :mod:`plugin.wiring` and the adapters, and returns a report: a dataclass or a dict
the command line prints and writes as JSON. Jobs print no tables and parse no options. What the
user must fix (a missing server, model or file) is raised as a :class:`plugin.errors.UserError`
saying what to run; anything else is a bug and keeps its traceback.
"""
