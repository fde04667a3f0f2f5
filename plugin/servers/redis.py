"""A local ``redis-server`` (Feast's online store and the plan cache in the local stack)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import redis
from pydantic import SecretStr
from redis.backoff import NoBackoff
from redis.retry import Retry

from plugin.servers.process import LocalServer, ServerError, free_port


def redis_server_binary() -> str:
    """The ``redis-server`` on PATH, or a :class:`ServerError` that says how to install it."""
    found = shutil.which("redis-server")
    if found is None:
        raise ServerError("redis-server is not on PATH; run `make system-deps` (apt-get)")
    return found


class RedisServer(LocalServer):
    """``redis-server`` on 127.0.0.1 without persistence.

    A ``password`` is passed to the server on stdin (``redis-server -``), so it appears
    neither in the process table nor in the log or the state file.
    """

    default_name = "redis"

    def __init__(
        self,
        port: int | None = None,
        password: SecretStr | None = None,
        *,
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

    def command(self) -> list[str]:
        return [
            redis_server_binary(),
            "-",  # read config from stdin first; the flags below are applied after it
            "--port", str(self.port),
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
        return {"host": self.host, "port": self.port, "auth": self.password is not None}

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT`` (without the password)."""
        return f"redis://{self.host}:{self.port}"
