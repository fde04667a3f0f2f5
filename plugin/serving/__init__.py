"""Serving the planner on Triton: the models' I/O contract, their backend shells, model
management through Triton's repository API, and its metrics.

``contract`` and ``metrics`` import no Triton code; ``backend`` runs inside Triton's Python
stub; ``control`` talks to a running server.
"""
