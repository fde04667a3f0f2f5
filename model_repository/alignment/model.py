"""Triton's entry point for one alignment version: a thin shell over plugin.serving.backend.

`explore models publish` copies this file into model_repository/alignment/<version>/. The logic
lives in the installed project because the backend stub ignores PYTHONPATH.
"""

from plugin.serving.backend import AlignmentBackend as TritonPythonModel

__all__ = ["TritonPythonModel"]
