"""A local ``redis-server`` (Feast's online store and the plan cache in the local stack)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import redis
from pydantic import SecretStr
from redis.backoff import NoBackoff
from redis.retry import Retry

from plugin.localstack.process import LocalServer, ServerError, free_port
from plugin.security import ServerTLS


def redis_server_binary() -> str:
    """The ``redis-server`` on PATH, or a :class:`ServerError` that says how to install it."""
    found = shutil.which("redis-server")
    if found is None:
        raise ServerError("redis-server is not on PATH; run `make system-deps` (apt-get)")
    return found


class RedisServer(LocalServer):
    """``redis-server`` on 127.0.0.1 without persistence.

    A ``password`` is passed to the server on stdin (``redis-server -``), so it appears
    neither in the process table nor in the log or the state file. With ``tls`` the server
    listens on ``port`` with TLS only (its plaintext port is off).
    """

    default_name = "redis"

    def __init__(
        self,
        port: int | None = None,
        password: SecretStr | None = None,
        *,
        tls: ServerTLS | None = None,
        name: str | None = None,
        log_path: Path | None = None,
        start_timeout: float = 10.0,
        stop_timeout: float = 5.0,
    ) -> None:
        super().__init__(
            name=name, log_path=log_path, start_timeout=start_timeout, stop_timeout=stop_timeout
        )
        self.port = port or free_port(self.host)
        self.password = password
        self.tls = tls

    def command(self) -> list[str]:
        if self.tls is None:
            listen = ["--port", str(self.port)]
        else:
            listen = [
                "--port", "0",
                "--tls-port", str(self.port),
                "--tls-cert-file", str(self.tls.certfile),
                "--tls-key-file", str(self.tls.keyfile),
                "--tls-auth-clients", "yes" if self.tls.require_client_cert else "no",
            ]  # fmt: skip
            if self.tls.ca_certs is not None:
                listen += ["--tls-ca-cert-file", str(self.tls.ca_certs)]
        return [
            redis_server_binary(),
            "-",  # read config from stdin first; the flags below are applied after it
            *listen,
            "--bind", self.host,
            "--save", "",
            "--appendonly", "no",
            "--daemonize", "no",
        ]  # fmt: skip

    def stdin_data(self) -> bytes:
        if self.password is None:
            return b""
        # Hex escapes inside a quoted config string carry any byte, quotes and newlines included.
        escaped = "".join(f"\\x{byte:02x}" for byte in self.password.get_secret_value().encode())
        return f'requirepass "{escaped}"\n'.encode()

    def client(self, **kwargs: Any) -> redis.Redis:
        """A redis-py client for this server (``kwargs`` go to :class:`redis.Redis`)."""
        password = self.password.get_secret_value() if self.password is not None else None
        if self.tls is not None:
            # The server's own files make a trusted client (a client certificate where the
            # server asks for one): the readiness probe and tests need no other material.
            kwargs.setdefault("ssl", True)
            kwargs.setdefault("ssl_ca_certs", str(self.tls.ca_certs or self.tls.certfile))
            if self.tls.require_client_cert:
                kwargs.setdefault("ssl_certfile", str(self.tls.certfile))
                kwargs.setdefault("ssl_keyfile", str(self.tls.keyfile))
        return redis.Redis(host=self.host, port=self.port, password=password, **kwargs)

    def is_ready(self) -> bool:
        # No retries: redis-py's default backoff would stretch one failed probe to seconds.
        probe = self.client(
            socket_connect_timeout=0.5, socket_timeout=0.5, retry=Retry(NoBackoff(), 0)
        )
        with probe as client:
            return bool(client.ping())

    def ports(self) -> list[int]:
        return [self.port]

    def endpoints(self) -> dict[str, Any]:
        found: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "auth": self.password is not None,
        }
        if self.tls is not None:
            found["tls"] = True
        return found

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT``, ``rediss://`` with TLS (without the password)."""
        scheme = "redis" if self.tls is None else "rediss"
        return f"{scheme}://{self.host}:{self.port}"
