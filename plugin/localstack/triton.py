"""A local Triton Inference Server (2.51, Python backend) unpacked by ``make triton``.

The server comes from the ``nvidia-pytriton`` wheel, unpacked with the wheel's own layout under
``.cache/tritonserver/`` because the binaries' RPATHs point into it. Python-backend models run
in a stub that embeds this venv's interpreter: the venv's ``bin`` goes first on ``PATH`` and the
interpreter's shared libpython on ``LD_LIBRARY_PATH``, and the models import the project from
the venv (the stub ignores ``PYTHONPATH``, hence ``pip install -e .``).
"""

from __future__ import annotations

import os
import sys
import sysconfig
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from plugin.localstack.process import LocalServer, ServerError, free_port
from plugin.security import ServerTLS
from plugin.settings import PROJECT_ROOT

DEFAULT_TRITON_HOME = PROJECT_ROOT / ".cache" / "tritonserver"
UNPACK = "run `make triton` (TRITON_HOME points elsewhere if it is unpacked there)"


STUB = "triton_python_backend_stub"


@dataclass(frozen=True)
class StubProcess:
    """One Python-backend stub process: the model version it runs and its resident memory."""

    model: str
    version: int
    pid: int
    rss_mb: float


def python_stubs(server_pid: int) -> list[StubProcess]:
    """The Python stub processes a tritonserver started, from ``/proc`` (Linux).

    Each model instance runs in its own stub, whose first argument is the path of the
    version's ``model.py`` (``<repository>/<model>/<version>/model.py``)."""
    stubs = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            status = (entry / "status").read_text()
        except OSError:  # the process ended while we looked
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        if not argv[0].endswith(STUB.encode()) or int(fields["PPid"]) != server_pid:
            continue
        model_py = Path(argv[1].decode())
        rss_kb = int(fields.get("VmRSS", "0 kB").split()[0])
        version = int(model_py.parent.name) if model_py.parent.name.isdigit() else -1
        stubs.append(
            StubProcess(model_py.parent.parent.name, version, int(entry.name), rss_kb / 1024)
        )
    return sorted(stubs, key=lambda s: (s.model, s.version))


class TritonInstall:
    """Paths inside an unpacked Triton (``TRITON_HOME`` overrides the default location)."""

    def __init__(self, home: Path | None = None) -> None:
        self.home = home or Path(os.environ.get("TRITON_HOME", DEFAULT_TRITON_HOME))
        self.root = self.home / "pytriton" / "tritonserver"
        self.binary = self.root / "bin" / "tritonserver"
        self.backends = self.root / "backends"
        self.caches = self.root / "caches"
        self.libs = self.home / "nvidia_pytriton.libs"

    def check(self) -> None:
        """Raise a :class:`ServerError` saying what to run if the server is not unpacked."""
        if not os.access(self.binary, os.X_OK):
            raise ServerError(f"tritonserver is not installed at {self.binary}", hint=UNPACK)
        stub = self.backends / "python" / "triton_python_backend_stub"
        if not os.access(stub, os.X_OK):
            raise ServerError(f"the Python backend stub is missing at {stub}", hint=UNPACK)


class TritonServer(LocalServer):
    """``tritonserver`` on 127.0.0.1 over a model repository, in explicit model-control mode.

    Ports left out are picked free. ``load_models`` are loaded at start (``"*"`` loads all);
    anything else is loaded later through the client's ``load_model``. Configs must be
    complete (``--disable-auto-complete-config``). Readiness is ``/v2/health/live``: the
    server-level ``/ready`` stays false after any failed model load.

    ``grpc_tls`` serves gRPC (the planner client's protocol) over TLS, mutual TLS with
    ``require_client_cert``. Triton's HTTP and metrics endpoints have no TLS: they stay on
    127.0.0.1.
    """

    default_name = "triton"

    def __init__(
        self,
        model_repository: Path,
        http_port: int | None = None,
        grpc_port: int | None = None,
        metrics_port: int | None = None,
        *,
        load_models: Sequence[str] = (),
        log_verbose: int = 0,
        extra_args: Sequence[str] = (),
        grpc_tls: ServerTLS | None = None,
        install: TritonInstall | None = None,
        name: str | None = None,
        log_path: Path | None = None,
        start_timeout: float = 120.0,
        stop_timeout: float = 15.0,
    ) -> None:
        super().__init__(
            name=name, log_path=log_path, start_timeout=start_timeout, stop_timeout=stop_timeout
        )
        self.model_repository = Path(model_repository).resolve()
        self.http_port = http_port or free_port(self.host)
        self.grpc_port = grpc_port or free_port(self.host)
        self.metrics_port = metrics_port or free_port(self.host)
        self.load_models = tuple(load_models)
        self.log_verbose = log_verbose
        self.extra_args = tuple(extra_args)
        self.grpc_tls = grpc_tls
        self.install = install or TritonInstall()

    @property
    def http_url(self) -> str:
        """``127.0.0.1:PORT``: what ``tritonclient.http.InferenceServerClient`` takes."""
        return f"{self.host}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        """``127.0.0.1:PORT``: what ``tritonclient.grpc.InferenceServerClient`` takes."""
        return f"{self.host}:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        """The Prometheus endpoint."""
        return f"http://{self.host}:{self.metrics_port}/metrics"

    def command(self) -> list[str]:
        self.install.check()
        if not self.model_repository.is_dir():
            raise ServerError(f"model repository {self.model_repository} is not a directory")
        argv = [
            str(self.install.binary),
            f"--model-repository={self.model_repository}",
            f"--backend-directory={self.install.backends}",
            f"--cache-directory={self.install.caches}",
            "--disable-auto-complete-config",
            "--model-control-mode=explicit",
            f"--http-address={self.host}",
            f"--http-port={self.http_port}",
            f"--grpc-address={self.host}",
            f"--grpc-port={self.grpc_port}",
            f"--metrics-address={self.host}",
            f"--metrics-port={self.metrics_port}",
            # CPU only: skip the DCGM probe and the pinned (CUDA host) memory pool.
            "--allow-gpu-metrics=false",
            "--pinned-memory-pool-byte-size=0",
            "--exit-timeout-secs=5",
            f"--log-verbose={self.log_verbose}",
        ]
        argv += [f"--load-model={model}" for model in self.load_models]
        tls = self.grpc_tls
        if tls is not None:
            argv += [
                "--grpc-use-ssl=true",
                f"--grpc-server-cert={tls.certfile}",
                f"--grpc-server-key={tls.keyfile}",
            ]
            if tls.ca_certs is not None:
                argv.append(f"--grpc-root-cert={tls.ca_certs}")
            if tls.require_client_cert:
                argv.append("--grpc-use-ssl-mutual=true")
        return argv + list(self.extra_args)

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        venv_bin = str(Path(sys.prefix) / "bin")
        env["PATH"] = os.pathsep.join([venv_bin, env.get("PATH", "")]).rstrip(os.pathsep)
        libdirs = [str(sysconfig.get_config_var("LIBDIR") or ""), str(self.install.libs)]
        if env.get("LD_LIBRARY_PATH"):
            libdirs.append(env["LD_LIBRARY_PATH"])
        env["LD_LIBRARY_PATH"] = os.pathsep.join(d for d in libdirs if d)
        return env

    def _get(self, path: str, timeout: float = 1.0) -> int:
        url = f"http://{self.http_url}{path}"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)

    def is_ready(self) -> bool:
        return self._get("/v2/health/live", timeout=0.5) == 200

    def model_ready(self, model: str) -> bool:
        """Whether ``model`` is loaded and ready (``/v2/models/<model>/ready``)."""
        try:
            return self._get(f"/v2/models/{model}/ready") == 200
        except OSError:
            return False

    def ports(self) -> list[int]:
        return [self.http_port, self.grpc_port, self.metrics_port]

    def stubs(self) -> list[StubProcess]:
        """This server's Python stub processes (model, version, RSS)."""
        return python_stubs(self.pid) if self.pid is not None else []

    def endpoints(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "http_port": self.http_port,
            "grpc_port": self.grpc_port,
            "metrics_port": self.metrics_port,
            "model_repository": str(self.model_repository),
            **({"grpc_tls": True} if self.grpc_tls is not None else {}),
        }
