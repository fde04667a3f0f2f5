"""Where Triton listens and how a tritonclient connects to it, from ``settings.triton``."""

from __future__ import annotations

from typing import Any

from plugin.settings import TritonSettings


def grpc_url(settings: TritonSettings) -> str:
    return f"{settings.host}:{settings.grpc_port}"


def client_options(settings: TritonSettings) -> dict[str, Any]:
    """Keyword arguments for both tritonclient gRPC clients (sync and asyncio)."""
    options: dict[str, Any] = {"url": grpc_url(settings)}
    if settings.ssl:
        options["ssl"] = True
        for name in ("root_certificates", "private_key", "certificate_chain"):
            value = getattr(settings, name)
            if value is not None:
                options[name] = str(value)
    return options
