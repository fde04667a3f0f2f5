"""What the stack exposes: every server listens on 127.0.0.1 only, and no secret is in sight.

Secrets come from the environment as ``SecretStr``. They must not show in ``explore settings``,
in ``explore stack up``'s output, in a server's process arguments, in its log, in the run
directory's state files or in ``stack.env``. (``var/run/feature_store.yaml`` holds the Redis
password by necessity, for ``feast serve``; it is mode 0600, checked by the stack test.)
"""

from __future__ import annotations

import ipaddress
import json
import os
import socket
from pathlib import Path

import pytest
from typer.testing import CliRunner

from plugin.cli.app import app
from plugin.localstack import RunDirectory, free_port
from plugin.security import secrets_in
from plugin.settings import load_settings

REDIS_PASSWORD = "redis-" + "pw" * 12
SASL_PASSWORD = "sasl-" + "pw" * 12
TRITON_TOKEN = "token-" + "tk" * 12
SECRETS = (REDIS_PASSWORD, SASL_PASSWORD, TRITON_TOKEN)


def secret_environment() -> dict[str, str]:
    return {
        "EXPLORE_REDIS__PASSWORD": REDIS_PASSWORD,
        "EXPLORE_KAFKA__SECURITY_PROTOCOL": "SASL_SSL",
        "EXPLORE_KAFKA__SASL_MECHANISM": "SCRAM-SHA-512",
        "EXPLORE_KAFKA__SASL_USERNAME": "svc-explorer",
        "EXPLORE_KAFKA__SASL_PASSWORD": SASL_PASSWORD,
        "EXPLORE_TRITON__AUTH_TOKEN": TRITON_TOKEN,
    }


def test_explore_settings_masks_every_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in secret_environment().items():
        monkeypatch.setenv(name, value)
    settings = load_settings()
    assert sorted(secrets_in(settings)) == sorted(SECRETS)
    result = CliRunner().invoke(app, ["settings"])
    assert result.exit_code == 0, result.output
    shown = json.loads(result.output)
    assert shown["kafka"]["sasl_username"] == "svc-explorer"
    assert shown["triton"]["auth_token"] == "**********"
    assert not [secret for secret in SECRETS if secret in result.output]
    assert not [secret for secret in SECRETS if secret in repr(settings) + str(settings)]


def _descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = {pid}, [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _socket_inodes(pids: set[int]) -> set[str]:
    inodes = set()
    for pid in pids:
        try:
            fds = list(Path(f"/proc/{pid}/fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    return inodes


def listening_addresses(pid: int) -> list[str]:
    """``ip:port`` of every TCP socket in LISTEN state held by ``pid`` or its descendants
    (``[ipv6]:port``; IPv4-mapped ones as IPv4), from /proc/net/tcp and /proc/net/tcp6."""
    inodes = _socket_inodes(_descendants(pid))
    found = []
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state != "0A" or inode not in inodes:  # 0A: LISTEN
                continue
            address, port = local.split(":")
            raw = bytes.fromhex(address)
            if table == "tcp":
                host = socket.inet_ntoa(raw[::-1])
            else:
                # Four 32-bit words, each in host (little-endian) order.
                ip6 = ipaddress.IPv6Address(b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4)))
                # gRPC binds 127.0.0.1 as an IPv6 socket on the IPv4-mapped address.
                host = str(ip6.ipv4_mapped) if ip6.ipv4_mapped else f"[{ip6}]"
            found.append(f"{host}:{int(port, 16)}")
    return sorted(found)


@pytest.mark.integration
def test_the_stack_listens_on_loopback_only_and_shows_no_secret(tmp_path: Path) -> None:
    runner = CliRunner()
    var = tmp_path / "var"
    # The local stack talks plaintext to its own tansu (SASL is for a real cluster), so only
    # the Redis password and the Triton token apply here.
    env = {
        "EXPLORE_REDIS__PASSWORD": REDIS_PASSWORD,
        "EXPLORE_TRITON__AUTH_TOKEN": TRITON_TOKEN,
        "EXPLORE_VAR_DIR": str(var),
        "EXPLORE_FEAST__REGISTRY_PATH": str(tmp_path / "registry.db"),
        "EXPLORE_MODELS__REPOSITORY": str(tmp_path / "models"),
    }
    ports = {
        "--kafka-port": free_port(),
        "--redis-port": free_port(),
        "--triton-http-port": free_port(),
        "--triton-grpc-port": free_port(),
        "--triton-metrics-port": free_port(),
    }
    args = [item for option, port in ports.items() for item in (option, str(port))]
    try:
        up = runner.invoke(app, ["stack", "up", *args], env=env)
        assert up.exit_code == 0, up.output
        states = {state.name: state for state in RunDirectory(var / "run").running()}
        assert sorted(states) == ["redis", "tansu", "triton"]
        listening = {name: listening_addresses(state.pid) for name, state in states.items()}
        assert listening["tansu"] == [f"127.0.0.1:{ports['--kafka-port']}"]
        assert listening["redis"] == [f"127.0.0.1:{ports['--redis-port']}"]
        triton_ports = sorted(ports[f"--triton-{k}-port"] for k in ("http", "grpc", "metrics"))
        assert sorted(int(a.rsplit(":", 1)[1]) for a in listening["triton"]) == triton_ports
        everything = [address for found in listening.values() for address in found]
        assert all(address.startswith("127.0.0.1:") for address in everything), listening

        leaked = []
        for name, state in states.items():
            cmdline = Path(f"/proc/{state.pid}/cmdline").read_bytes().decode(errors="replace")
            leaked += [f"{name} argv" for s in SECRETS if s in cmdline]
        run_files = [p for p in (var / "run").iterdir() if p.name != "feature_store.yaml"]
        for path in [*run_files, *(var / "logs").iterdir()]:
            if path.is_file():
                text = path.read_text(errors="replace")
                leaked += [str(path) for s in SECRETS if s in text]
        leaked += ["stack up output" for s in SECRETS if s in up.output]
        assert not leaked
        assert (var / "run" / "stack.env").exists()
    finally:
        down = runner.invoke(app, ["stack", "down"], env=env)
    assert down.exit_code == 0, down.output
