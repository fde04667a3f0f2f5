"""Redis with a password and (mutual) TLS: the plan-cache client and Feast, both from settings."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import redis
from pydantic import SecretStr
from redis.backoff import NoBackoff
from redis.retry import Retry

from plugin.adapters.feast_store import FeastStore
from plugin.core.sequence import UserClusterSequence
from plugin.localstack import RedisServer
from plugin.security import ServerTLS, redis_tls_options
from plugin.settings import Settings, SettingsError, load_settings
from plugin.wiring import redis_client

# Quotes, spaces, '=' and a JSON literal: Feast JSON-decodes connection-string values.
PASSWORD = 'true "p=w0rd" \\x'


def tls_settings(server: RedisServer, tmp_path: Path, **redis_fields: Any) -> Settings:
    return load_settings(
        var_dir=tmp_path / "var",
        redis={
            "port": server.port,
            "password": PASSWORD,
            "ssl": True,
            **redis_fields,
        },
        feast={"online_store": "redis", "registry_path": tmp_path / "registry.db"},
    )


def test_tls_fields_must_be_consistent(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="ssl is false"):
        load_settings(redis={"ssl_ca_certs": tmp_path / "ca.pem"})
    with pytest.raises(SettingsError, match="together"):
        load_settings(redis={"ssl": True, "ssl_certfile": tmp_path / "c.pem"})
    with pytest.raises(SettingsError, match="comma"):
        load_settings(redis={"password": "a,b"})
    plain = load_settings()
    assert redis_tls_options(plain.redis) == {}
    secure = load_settings(redis={"ssl": True, "ssl_ca_certs": tmp_path / "ca.pem"})
    assert redis_tls_options(secure.redis) == {
        "ssl": True,
        "ssl_cert_reqs": "required",
        "ssl_ca_certs": str(tmp_path / "ca.pem"),
    }
    # The connection string carries the secret for Feast, quoted so it decodes unchanged.
    with_password = load_settings(redis={"password": PASSWORD, "ssl": True})
    assert 'password="true \\"p=w0rd\\" \\\\x"' in with_password.redis.connection_string()
    assert PASSWORD not in with_password.model_dump_json()


@pytest.mark.integration
def test_mutual_tls_and_password_for_the_cache_client_and_feast(tls: Any, tmp_path: Path) -> None:
    server_tls = ServerTLS(tls.server_cert, tls.server_key, tls.ca, require_client_cert=True)
    log = tmp_path / "redis-tls.log"
    with RedisServer(password=SecretStr(PASSWORD), tls=server_tls, log_path=log) as server:
        assert server.url.startswith("rediss://127.0.0.1:")
        no_retry = Retry(NoBackoff(), 0)
        # Plaintext is refused: the server speaks TLS only.
        plain = redis.Redis(port=server.port, password=PASSWORD, socket_timeout=2, retry=no_retry)
        with pytest.raises(redis.ConnectionError):
            plain.ping()
        # A client that trusts another CA refuses the server's certificate.
        rogue = redis.Redis(
            port=server.port,
            password=PASSWORD,
            retry=no_retry,
            socket_timeout=2,
            **redis_tls_options(tls_settings(server, tmp_path, ssl_ca_certs=tls.rogue_ca).redis),
        )
        with pytest.raises(redis.ConnectionError, match="certificate verify failed"):
            rogue.ping()
        # Mutual TLS: a client without a certificate is refused by the server.
        anonymous = redis_client(tls_settings(server, tmp_path, ssl_ca_certs=tls.ca))
        with pytest.raises(redis.ConnectionError):
            anonymous.ping()

        settings = tls_settings(
            server,
            tmp_path,
            ssl_ca_certs=tls.ca,
            ssl_certfile=tls.client_cert,
            ssl_keyfile=tls.client_key,
        )
        # The plan cache's client, from settings.
        assert redis_client(settings).ping() is True
        # Feast on the same server, through the connection string.
        store = FeastStore(settings)
        store.apply()
        state = UserClusterSequence(
            user_id="u1",
            recent_clusters=(3, 1),
            last_event_time=datetime(1998, 1, 1, tzinfo=UTC),
            last_event_id="e1",
            event_count=2,
            positive_count=2,
            revision_us=1,
        )
        store.write_sequences([state])
        assert store.read_sequences(["u1"])["u1"] == state
        assert PASSWORD.encode() not in Path(f"/proc/{server.pid}/cmdline").read_bytes()
    assert PASSWORD not in log.read_text()
