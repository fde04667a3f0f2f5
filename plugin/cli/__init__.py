"""``explore``: the command line. Typer apps only: each command parses its options, calls a
job (:mod:`plugin.jobs`) and prints the report it returns.

The command modules import the jobs, the adapters and :mod:`plugin.wiring` inside the command
functions, not at the top: importing those pulls in torch, Feast, Faust and tritonclient
(about 15 s on a small machine), and ``explore --help`` or a typo must answer at once. This is
the one place in the project where an import between its own modules sits in a function.
"""
