"""Triton's entry point for one planner version: a thin shell over plugin.serving.backend.

`explore models publish` copies this file into model_repository/planner/<version>/. The logic
lives in the installed project because the backend stub ignores PYTHONPATH.
"""

from plugin.serving.backend import PlannerBackend as TritonPythonModel

__all__ = ["TritonPythonModel"]
