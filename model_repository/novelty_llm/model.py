"""Triton's entry point for one LLM novelty version: a thin shell over plugin.serving.backend.

`explore models publish` copies this file into model_repository/novelty_llm/<version>/ when the
version's novelty model is a language model. Its weights stay in novelty/<version>/.
"""

from plugin.serving.backend import LlmNoveltyBackend as TritonPythonModel

__all__ = ["TritonPythonModel"]
