# shellcheck shell=bash
# What deploy-cpu.sh, deploy-gpu.sh and deploy-hybrid.sh share. Sourced, not run: each script sets
# KRONOS_MODE (cpu | gpu | hybrid) and calls kronos_deploy_main "$@".

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
    echo "deploy-common.sh is sourced by deploy-cpu.sh, deploy-gpu.sh and deploy-hybrid.sh; run one of those." >&2
    exit 2
fi

KRONOS_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

# The guide's requests, used for the routing check.
SINGLE_BODY='{"data": [[100, 105, 98, 102]], "pred_len": 10}'
BATCH_BODY='{"batch": [{"data": [[100, 105, 98, 102]], "pred_len": 10}, {"data": [[200, 205, 198, 202]], "pred_len": 10}]}'

DRY_RUN=0
BUILD=1
OPEN=0
WITH_LB=0
TIMEOUT_S=300
COMMAND=up
LOG_SERVICE=""
COMPOSE=()
ENGINE=docker

say() { printf '%s\n' "$*"; }
fail() {
    printf 'error: %s\n' "$*" >&2
    exit 1
}

usage() {
    local script="deploy-${KRONOS_MODE}.sh" file="docker-compose.${KRONOS_MODE}.yml" lb_line=""
    if [[ "$KRONOS_MODE" == hybrid ]]; then
        lb_line="
  --with-lb          also start nginx-lb (profile loadbalancer) and check the routing through it:
                     single -> cpu, batch -> gpu, and both X-Kronos-Device overrides"
    fi
    cat <<EOF
Usage: ./$script [up|down|logs [SERVICE]|status] [options]

Deploys the Kronos service with $file (run from anywhere; it works in the repository root).

Commands:
  up                 build the image, start, wait for /v1/readyz, print the status and URLs (default)
  down               stop and remove the containers
  logs [SERVICE]     follow the logs (all services, or one)
  status             show the containers and each instance's readiness

Options:
  --dry-run          print the commands that would run, run nothing
  --no-build         start with the image as it is (no docker compose build)
  --timeout SECONDS  how long 'up' waits for /v1/readyz (default $TIMEOUT_S)$lb_line
  --open             publish on every interface even without KRONOS_API_KEYS (an open API: anyone
                     who reaches this host may use it); without it 'up' refuses to
  -h, --help         this help

Environment: the variables of $file (see DEPLOYMENT_DEVICE_OPTIONS.md) from the shell or ./.env;
KRONOS_COMPOSE         the compose command: 'docker compose', 'docker-compose' or 'podman-compose'
                       (default: the first of these found)
KRONOS_ENGINE          the engine's command for info/exec: docker or podman (default: podman with
                       podman-compose or where docker is absent, else docker)
KRONOS_COMPOSE_OVERRIDE  compose files layered over $file, separated by ':' (site settings)
EOF
}

parse_args() {
    local seen_command=0
    while (($#)); do
        case "$1" in
            -h | --help)
                usage
                exit 0
                ;;
            --dry-run) DRY_RUN=1 ;;
            --no-build) BUILD=0 ;;
            --open) OPEN=1 ;;
            --with-lb)
                [[ "$KRONOS_MODE" == hybrid ]] || fail "--with-lb is for deploy-hybrid.sh only"
                WITH_LB=1
                ;;
            --timeout)
                (($# >= 2)) || fail "--timeout needs a number of seconds"
                [[ "$2" =~ ^[0-9]+$ && "$2" -gt 0 ]] || fail "--timeout needs a positive whole number of seconds, not '$2'"
                TIMEOUT_S="$2"
                shift
                ;;
            --timeout=*)
                set -- --timeout "${1#--timeout=}" "${@:2}"
                continue
                ;;
            up | down | logs | status)
                ((seen_command == 0)) || fail "one command at a time (got '$COMMAND' and '$1')"
                COMMAND="$1"
                seen_command=1
                ;;
            -*) fail "unknown option '$1' (see --help)" ;;
            *)
                [[ "$COMMAND" == logs && -z "$LOG_SERVICE" ]] || fail "unexpected argument '$1' (see --help)"
                LOG_SERVICE="$1"
                ;;
        esac
        shift
    done
}

# Print a command as it would be typed; run it unless this is a dry run.
run() {
    printf '+ %s\n' "$*"
    ((DRY_RUN)) || "$@"
}

compose_file() { printf '%s/docker-compose.%s.yml' "$KRONOS_ROOT" "$KRONOS_MODE"; }

# docker compose (v2 plugin) if present, else docker-compose (v1 or v2 standalone), else
# podman-compose, unless KRONOS_COMPOSE says. With Podman, 'docker compose' or 'docker-compose' work
# too against Podman's Docker API (DOCKER_HOST=unix:///run/podman/podman.sock; see the guide).
detect_compose() {
    if [[ -n "${KRONOS_COMPOSE:-}" ]]; then
        read -r -a COMPOSE <<<"$KRONOS_COMPOSE"
    elif command -v docker >/dev/null 2>&1 && docker compose version >/dev/null 2>&1; then
        COMPOSE=(docker compose)
    elif command -v docker-compose >/dev/null 2>&1; then
        COMPOSE=(docker-compose)
    elif command -v podman-compose >/dev/null 2>&1; then
        COMPOSE=(podman-compose)
    elif ((DRY_RUN)); then
        COMPOSE=(docker compose)
    else
        fail "neither 'docker compose' (the Compose v2 plugin) nor 'docker-compose' nor 'podman-compose' was found: install Docker Compose 2 (https://docs.docker.com/compose/install/) or podman-compose, or name one in KRONOS_COMPOSE"
    fi
    COMPOSE+=(-f "$(compose_file)")
    local override overrides=()
    IFS=: read -r -a overrides <<<"${KRONOS_COMPOSE_OVERRIDE:-}"
    for override in "${overrides[@]}"; do
        [[ -z "$override" ]] || COMPOSE+=(-f "$override")
    done
    # nginx-lb lives in the profile "loadbalancer": name it whenever it is wanted or may be running.
    if [[ "$KRONOS_MODE" == hybrid ]] && { ((WITH_LB)) || [[ "$COMMAND" != up ]]; }; then
        COMPOSE+=(--profile loadbalancer)
    fi
}

# The engine's own command (docker, or podman), for info and exec.
detect_engine() {
    if [[ -n "${KRONOS_ENGINE:-}" ]]; then
        ENGINE="$KRONOS_ENGINE"
    elif [[ "${KRONOS_COMPOSE:-}" == podman* ]]; then
        ENGINE=podman
    elif ! command -v docker >/dev/null 2>&1 && command -v podman >/dev/null 2>&1; then
        ENGINE=podman
    fi
}

check_docker() {
    if [[ "$ENGINE" == podman ]]; then
        command -v podman >/dev/null 2>&1 || fail "podman not found: install Podman 4 or newer (https://podman.io/docs/installation)"
    else
        command -v "$ENGINE" >/dev/null 2>&1 ||
            fail "$ENGINE not found: install Docker Engine 20.10 or newer (https://docs.docker.com/engine/install/), or Podman (set KRONOS_ENGINE=podman)"
    fi
    local info_error
    if ! info_error="$("$ENGINE" info 2>&1 >/dev/null)"; then
        fail "cannot reach the Docker engine (is the daemon running, and may this user use it?): ${info_error%%$'\n'*}"
    fi
}

# The host GPU, checked before anything else: without one nothing further matters.
check_gpu_driver() {
    command -v nvidia-smi >/dev/null 2>&1 ||
        fail "nvidia-smi not found: a GPU deployment needs the NVIDIA driver on this host (use deploy-cpu.sh without a GPU)"
    local gpus
    gpus="$(nvidia-smi -L 2>/dev/null | grep -c '^GPU ' || true)"
    ((gpus > 0)) || fail "nvidia-smi lists no GPU: check the driver with 'nvidia-smi' (use deploy-cpu.sh without a GPU)"
    say "GPUs on this host: $gpus"
}

# Docker's access to the GPU (the NVIDIA Container Toolkit), before anything is built or started.
check_gpu_runtime() {
    if [[ "$ENGINE" == podman ]]; then
        # Podman reaches the GPU through the toolkit's CDI spec (or its OCI hook).
        if ! grep -qs 'nvidia.com' /etc/cdi/*.y*ml /var/run/cdi/*.y*ml && ! command -v nvidia-container-runtime-hook >/dev/null 2>&1; then
            fail "Podman sees no NVIDIA GPU: install the NVIDIA Container Toolkit, then run 'sudo nvidia-ctk cdi generate --output=/etc/cdi/nvidia.yaml' (https://docs.nvidia.com/datacenter/cloud-native/container-toolkit/latest/cdi-support.html)"
        fi
        return 0
    fi
    local runtimes
    runtimes="$("$ENGINE" info --format '{{json .Runtimes}}' 2>/dev/null || true)"
    if [[ "$runtimes" != *nvidia* ]] && ! command -v nvidia-container-runtime-hook >/dev/null 2>&1; then
        fail "Docker has no NVIDIA runtime: install the NVIDIA Container Toolkit, then run 'sudo nvidia-ctk runtime configure --runtime=docker && sudo systemctl restart docker' (https://docs.nvidia.com/datacenter/cloud-native/container-toolkit/latest/install-guide.html)"
    fi
}

# Instances of this mode: "service" per line.
instances() {
    case "$KRONOS_MODE" in
        cpu) echo kronos-api-cpu ;;
        gpu) echo kronos-api-gpu ;;
        hybrid) printf '%s\n' kronos-api-cpu kronos-api-gpu ;;
    esac
}

# http://HOST:PORT where SERVICE's container port is published, as the host reaches it.
published_url() {
    local service="$1" container_port="$2" address
    address="$("${COMPOSE[@]}" port "$service" "$container_port" 2>/dev/null | head -n 1)"
    address="${address//[[:space:]]/}"
    [[ -n "$address" ]] || return 1
    # "HOST:PORT" from docker compose, "PORT" alone from podman-compose.
    local host="${address%:*}" port="${address##*:}"
    [[ "$address" == *:* ]] || host=""
    case "$host" in 0.0.0.0 | "[::]" | "::" | "") host=127.0.0.1 ;; esac
    printf 'http://%s:%s' "$host" "$port"
}

# Wait until URL/v1/readyz answers 200; on timeout show why and the service's last log lines.
wait_ready() {
    local service="$1" url="$2" deadline=$((SECONDS + TIMEOUT_S)) body=""
    say "Waiting up to ${TIMEOUT_S}s for $service to be ready ($url/v1/readyz) ..."
    while ((SECONDS < deadline)); do
        if body="$(curl -fsS --max-time 5 "$url/v1/readyz" 2>/dev/null)"; then
            say "$service is ready: $body"
            READY_BODY="$body"
            return 0
        fi
        sleep 2
    done
    body="$(curl -sS --max-time 5 "$url/v1/readyz" 2>&1 || true)"
    say "$service is not ready after ${TIMEOUT_S}s. Last answer from /v1/readyz: ${body:-<none>}" >&2
    say "Last log lines of $service:" >&2
    "${COMPOSE[@]}" logs --tail 30 "$service" >&2 || true
    return 1
}

json_field() { sed -n "s/.*\"$1\"[[:space:]]*:[[:space:]]*\"\\([^\"]*\\)\".*/\\1/p" <<<"$2" | head -n 1; }

# After the GPU instance is ready: is it really on the GPU, and does the container see one?
verify_gpu_instance() {
    local device
    device="$(json_field device "$READY_BODY")"
    if [[ "$device" == cuda* ]]; then
        say "kronos-api-gpu serves on $device"
    else
        say "WARNING: kronos-api-gpu is ready but serves on '${device:-unknown}', not a GPU (KRONOS_DEVICE_FALLBACK=cpu?)" >&2
    fi
    "$ENGINE" exec kronos-api-gpu nvidia-smi -L || say "WARNING: '$ENGINE exec kronos-api-gpu nvidia-smi' failed: the container does not see the GPU" >&2
}

# A variable as compose sees it: from the shell, else the last NAME= line of ./.env; empty if neither.
setting() {
    local name="$1" value="${!1:-}"
    if [[ -z "$value" && -f "$KRONOS_ROOT/.env" ]]; then
        value="$(sed -n "s/^[[:space:]]*${name}[[:space:]]*=[[:space:]]*//p" "$KRONOS_ROOT/.env" | tail -n 1)"
        value="${value%\"}" && value="${value#\"}"
    fi
    printf '%s' "$value"
}

# The first of KRONOS_API_KEYS (shell, else ./.env), for the routing check's requests; empty if none.
routing_api_key() {
    local keys
    keys="$(setting KRONOS_API_KEYS)"
    keys="${keys%%,*}"
    printf '%s' "${keys//[[:space:]]/}"
}

# The compose files publish on KRONOS_BIND_ADDRESS, every interface (0.0.0.0) unless set. Without
# KRONOS_API_KEYS that is an API open to the network: refuse, unless --open says it is meant.
check_exposure() {
    local bind keys
    bind="$(setting KRONOS_BIND_ADDRESS)"
    bind="${bind:-0.0.0.0}"
    keys="$(setting KRONOS_API_KEYS)"
    keys="${keys//[[:space:],]/}"
    case "$bind" in 127.* | ::1 | "[::1]" | localhost) return 0 ;; esac
    [[ -z "$keys" ]] || return 0
    if ((OPEN)); then
        say "WARNING: publishing an open API on $bind (no KRONOS_API_KEYS, --open): anyone who reaches this host may use it" >&2
        return 0
    fi
    fail "refusing to publish an open API on $bind (KRONOS_BIND_ADDRESS; unset means every interface) without KRONOS_API_KEYS: set KRONOS_API_KEYS (shell or .env), or KRONOS_BIND_ADDRESS=127.0.0.1 for this host only, or pass --open to publish it open anyway"
}

# One routed request through the balancer; prints the line of the report, returns 1 on a mismatch.
check_route() {
    local label="$1" path="$2" body="$3" override="$4" expected="$5" headers status used api_key
    local args=(-sS --max-time 120 -o /dev/null -D - -X POST -H "Content-Type: application/json" --data "$body")
    [[ -z "$override" ]] || args+=(-H "X-Kronos-Device: $override")
    api_key="$(routing_api_key)"
    [[ -z "$api_key" ]] || args+=(-H "X-API-Key: $api_key")
    if ! headers="$(curl "${args[@]}" "$LB_URL$path" 2>&1)"; then
        printf '  %-32s -> request failed: %s\n' "$label" "${headers%%$'\n'*}"
        return 1
    fi
    status="$(sed -n 's/^HTTP\/[0-9.]* \([0-9]*\).*/\1/p' <<<"$headers" | tail -n 1)"
    used="$(tr -d '\r' <<<"$headers" | sed -n 's/^[Xx]-[Bb]ackend-[Uu]sed: *//p' | tail -n 1)"
    if [[ "$status" == 200 && "$used" == "$expected" ]]; then
        printf '  %-32s -> %-4s ok\n' "$label" "$used"
        return 0
    fi
    printf '  %-32s -> %s (HTTP %s), expected %s\n' "$label" "${used:-no X-Backend-Used}" "${status:-?}" "$expected"
    return 1
}

check_routing() {
    say "Routing through $LB_URL:"
    if ((DRY_RUN)); then
        say "+ curl -X POST $LB_URL/v1/predict/single ... (expect X-Backend-Used: cpu)"
        say "+ curl -X POST $LB_URL/v1/predict/batch ... (expect X-Backend-Used: gpu)"
        say "+ curl -X POST $LB_URL/v1/predict/batch -H 'X-Kronos-Device: cpu' ... (expect cpu)"
        say "+ curl -X POST $LB_URL/v1/predict/single -H 'X-Kronos-Device: gpu' ... (expect gpu)"
        return 0
    fi
    local failures=0
    check_route "single" /v1/predict/single "$SINGLE_BODY" "" cpu || failures=$((failures + 1))
    check_route "batch" /v1/predict/batch "$BATCH_BODY" "" gpu || failures=$((failures + 1))
    check_route "batch + X-Kronos-Device: cpu" /v1/predict/batch "$BATCH_BODY" cpu cpu || failures=$((failures + 1))
    check_route "single + X-Kronos-Device: gpu" /v1/predict/single "$SINGLE_BODY" gpu gpu || failures=$((failures + 1))
    if ((failures)); then
        say "Routing check: $failures of 4 not as expected (see DEPLOYMENT_DEVICE_OPTIONS.md, Troubleshooting)" >&2
        return 1
    fi
    say "Routing check: all 4 as expected"
}

cmd_up() {
    check_exposure
    if ((!DRY_RUN)); then
        [[ "$KRONOS_MODE" == cpu ]] || check_gpu_runtime
        command -v curl >/dev/null 2>&1 || fail "curl not found: the readiness check needs it"
    else
        say "(dry run: the docker$([[ "$KRONOS_MODE" == cpu ]] || printf ', nvidia-smi and NVIDIA runtime') checks are skipped)"
    fi
    ((BUILD == 0)) || run "${COMPOSE[@]}" build
    run "${COMPOSE[@]}" up -d

    local service url urls=()
    while read -r service; do
        if ((DRY_RUN)); then
            say "+ curl -fsS http://127.0.0.1:<published port>/v1/readyz   (every 2 s, up to ${TIMEOUT_S}s, for $service)"
            continue
        fi
        url="$(published_url "$service" 8000)" || fail "$service publishes no port 8000 (is it running? '${COMPOSE[*]} ps')"
        wait_ready "$service" "$url" || exit 1
        [[ "$service" != kronos-api-gpu ]] || verify_gpu_instance
        urls+=("$service: $url")
    done < <(instances)

    if ((WITH_LB)); then
        if ((DRY_RUN)); then
            LB_URL="http://127.0.0.1:\${KRONOS_LB_PORT:-8080}"
        else
            LB_URL="$(published_url nginx-lb 8080)" || fail "nginx-lb publishes no port 8080 (is it running?)"
            wait_ready nginx-lb "$LB_URL" || exit 1
            urls+=("nginx-lb: $LB_URL")
        fi
        check_routing || exit 1
    fi

    ((DRY_RUN)) && return 0
    run "${COMPOSE[@]}" ps
    say ""
    say "Kronos is up ($KRONOS_MODE):"
    printf '  %s\n' "${urls[@]}"
    say "Try: curl -X POST ${urls[0]#*: }/v1/predict/single -H 'Content-Type: application/json' -d '$SINGLE_BODY'"
}

cmd_status() {
    run "${COMPOSE[@]}" ps
    ((DRY_RUN)) && return 0
    local service url
    while read -r service; do
        if url="$(published_url "$service" 8000)"; then
            say "$service ($url): $(curl -sS --max-time 5 "$url/v1/readyz" 2>&1 || true)"
        else
            say "$service: not running"
        fi
    done < <(instances)
}

kronos_deploy_main() {
    parse_args "$@"
    if ((!DRY_RUN)); then
        # A GPU deployment without a GPU fails on that first, whatever else is missing.
        if [[ "$COMMAND" == up && "$KRONOS_MODE" != cpu ]]; then check_gpu_driver; fi
        detect_engine
        check_docker
    fi
    detect_compose
    case "$COMMAND" in
        up) cmd_up ;;
        down) run "${COMPOSE[@]}" down ;;
        logs)
            if [[ -n "$LOG_SERVICE" ]]; then
                run "${COMPOSE[@]}" logs -f --tail 200 "$LOG_SERVICE"
            else
                run "${COMPOSE[@]}" logs -f --tail 200
            fi
            ;;
        status) cmd_status ;;
    esac
}
