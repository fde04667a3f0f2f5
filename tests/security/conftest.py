"""Throwaway TLS material for the security tests, made with the ``openssl`` command line.

One CA signs a server certificate for 127.0.0.1 (IP and DNS names in subjectAltName, so
hostname checks pass) and a client certificate; a second, unrelated CA is the "wrong" trust
anchor a client must refuse. The keys never leave pytest's tmp dir.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass(frozen=True)
class TlsMaterial:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    rogue_ca: Path


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def _ca(directory: Path, name: str) -> None:
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        "-keyout", f"{name}.key", "-out", f"{name}.pem", "-subj", f"/CN={name}",
        cwd=directory,
    )  # fmt: skip


def _leaf(directory: Path, name: str, ca: str, usage: str) -> None:
    extensions = directory / f"{name}.ext"
    extensions.write_text(
        "basicConstraints=CA:FALSE\n"
        "keyUsage=digitalSignature,keyEncipherment\n"
        f"extendedKeyUsage={usage}\n"
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
    )
    _openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key",
        "-out", f"{name}.csr", "-subj", f"/CN={name}",
        cwd=directory,
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
        "-CAcreateserial", "-days", "2", "-out", f"{name}.pem", "-extfile", extensions.name,
        cwd=directory,
    )  # fmt: skip


@pytest.fixture(scope="session")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TlsMaterial:
    """A CA, a server and a client certificate signed by it, and an unrelated CA."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command line is needed to make test certificates")
    directory = tmp_path_factory.mktemp("tls")
    _ca(directory, "ca")
    _ca(directory, "rogue-ca")
    # The server's certificate may also act as a client (the servers' own readiness probes).
    _leaf(directory, "server", "ca", "serverAuth,clientAuth")
    _leaf(directory, "client", "ca", "clientAuth")
    for key in directory.glob("*.key"):
        key.chmod(0o600)
    return TlsMaterial(
        ca=directory / "ca.pem",
        server_cert=directory / "server.pem",
        server_key=directory / "server.key",
        client_cert=directory / "client.pem",
        client_key=directory / "client.key",
        rogue_ca=directory / "rogue-ca.pem",
    )
