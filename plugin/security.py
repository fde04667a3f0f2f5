"""Transport security and secrets: TLS options for the clients, TLS files for the local servers.

Every secret in the settings tree is a ``SecretStr``: ``explore settings`` and every
``model_dump`` print it masked, and it is read with ``get_secret_value()`` only where a
connection is made. Where each setting goes (docs/ROBUSTNESS.md has the how-to):

* Kafka: ``kafka.security_protocol`` SSL / SASL_SSL with ``kafka.ssl_cafile``, SASL with
  ``kafka.sasl_*`` (``plugin.adapters.kafka_io.client_options`` for kafka-python,
  ``streams.app.credentials`` for Faust);
* Redis: ``redis.password`` and ``redis.ssl`` with ``redis.ssl_ca_certs`` and, for mutual
  TLS, ``redis.ssl_certfile`` / ``redis.ssl_keyfile`` (:func:`redis_tls_options` for redis-py,
  ``RedisSettings.connection_string`` for Feast);
* Triton: ``triton.ssl`` with ``triton.root_certificates`` and, for mutual TLS,
  ``triton.private_key`` / ``triton.certificate_chain``; ``triton.auth_token`` is sent as the
  ``triton.auth_header`` header on every gRPC call.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, SecretStr

from plugin.settings import RedisSettings


def redis_tls_options(redis: RedisSettings) -> dict[str, Any]:
    """redis-py keyword arguments for ``redis.ssl`` and its certificate files ({} without TLS).

    The server certificate is always verified (against ``ssl_ca_certs``, or the system's CAs
    when it is not set), hostname included.
    """
    if not redis.ssl:
        return {}
    options: dict[str, Any] = {"ssl": True, "ssl_cert_reqs": "required"}
    if redis.ssl_ca_certs is not None:
        options["ssl_ca_certs"] = str(redis.ssl_ca_certs)
    if redis.ssl_certfile is not None and redis.ssl_keyfile is not None:
        options["ssl_certfile"] = str(redis.ssl_certfile)
        options["ssl_keyfile"] = str(redis.ssl_keyfile)
    return options


@dataclass(frozen=True)
class ServerTLS:
    """PEM files a local server (redis-server, tritonserver's gRPC) serves TLS with.

    ``ca_certs`` is the CA that client certificates must chain to; with
    ``require_client_cert`` the server refuses clients without one (mutual TLS).
    """

    certfile: Path
    keyfile: Path
    ca_certs: Path | None = None
    require_client_cert: bool = False

    def __post_init__(self) -> None:
        if self.require_client_cert and self.ca_certs is None:
            raise ValueError("require_client_cert needs ca_certs to check client certificates")


def secrets_in(tree: BaseModel) -> Iterator[str]:
    """Every non-empty ``SecretStr`` value in a settings tree (what a leak check looks for)."""
    for name in type(tree).model_fields:
        value = getattr(tree, name)
        if isinstance(value, SecretStr):
            secret = value.get_secret_value()
            if secret:
                yield secret
        elif isinstance(value, BaseModel):
            yield from secrets_in(value)
