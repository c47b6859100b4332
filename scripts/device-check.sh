#!/usr/bin/env bash
# The GPU checks, in one bounded run on the GPU machine (no network there), from the repository root
# with the wheels that scripts/device-wheels.sh fetched beside it (.device-wheels/, carried by the device tool).
#
#   bash scripts/device-check.sh              # every step; results in $OUT when set, else device-results/
#   bash scripts/device-check.sh --dry-run    # the plan: each step, its command and its time bound; runs nothing
#   bash scripts/device-check.sh --only oom,serve   # some steps only (install always runs first)
#
# Each step runs under `timeout` (its bound, then KILL_GRACE_S more before SIGKILL); the bounds add up
# to less than TOTAL_LIMIT_S (8 minutes). A failing step does not stop the others; the summary
# (summary.md, summary.json: step, status, seconds, bound, peak GPU memory) is rewritten after every
# step, the logs are appended to steps.log and packed into logs.tar.gz at the end; at most 8 files, as
# the device tool brings back from $OUT. Exit status 1 when any step failed or ran out of time.
# A step "skipped" (benchmarks/universe.py absent, no precision option for bf16) says why.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

PYTHON=${PYTHON:-python3}
WHEELS=.device-wheels
SITE=.device-site
DEVICE=${KRONOS_CHECK_DEVICE:-cuda:0}
KILL_GRACE_S=3
# Each step's commands run in `bash -c` with these: its first failing command fails the step.
STEP_SHELL_OPTIONS="set -eo pipefail;"
TOTAL_LIMIT_S=480

dry_run=0
only=""
while (($#)); do
    case "$1" in
        --dry-run) dry_run=1 ;;
        --only)
            only=${2:?--only needs a comma-separated list of steps}
            shift
            ;;
        -h | --help)
            awk 'NR > 1 && /^#/ {sub(/^# ?/, ""); print; next} NR > 1 {exit}' "$0"
            exit 0
            ;;
        *)
            echo "unknown argument: $1 (see --help)" >&2
            exit 2
            ;;
    esac
    shift
done

# --- the plan -----------------------------------------------------------------------------------
NAMES=()
BOUNDS=()
COMMANDS=()
NOTES=()
RESERVES=() # what a skipped step would be bounded by, were it there: the worst case must fit too
step() { # name bound command note
    NAMES+=("$1")
    BOUNDS+=("$2")
    COMMANDS+=("$3")
    NOTES+=("$4")
    RESERVES+=("$2")
}
skip() { # name bound-were-it-run reason
    step "$1" 0 "" "$3"
    RESERVES[${#RESERVES[@]} - 1]=$2
}

# shellcheck disable=SC2016 # $PY expands when the step runs
PYTEST='$PY -m pytest -q -rs -p no:cacheprovider'
step install 45 \
    "test -f $WHEELS/requirements.txt || { echo 'no $WHEELS/requirements.txt: run scripts/device-wheels.sh where pip reaches PyPI, and carry $WHEELS'; exit 1; }
rm -rf $SITE
PIP_CONFIG_FILE=/dev/null \$PY -m pip install --no-index --no-deps --no-compile --no-cache-dir --disable-pip-version-check --root-user-action=ignore --quiet --target $SITE --find-links $WHEELS -r $WHEELS/requirements.txt
\$PY scripts/device_bench.py env --device \$DEVICE" \
    "carried wheels into $SITE (no network); versions and origins; CUDA must be visible"
step nvidia-smi-before 8 \
    "nvidia-smi && nvidia-smi --query-gpu=index,name,memory.total,memory.used,utilization.gpu,temperature.gpu,clocks.sm,driver_version --format=csv" \
    "the GPU before the checks"
# The tests marked gpu, one pytest per test folder (each folder has its own conftest module).
step gpu-tests 50 \
    "rc=0
for dir in \$(grep -rl --include='test_*.py' -e 'pytest.mark.gpu' tests | xargs -n1 dirname | sort -u); do
    files=\$(grep -l -e 'pytest.mark.gpu' \"\$dir\"/test_*.py)
    $PYTEST -m gpu --junitxml=\"\$LOGS/gpu-tests-\${dir//\//-}.xml\" \$files || rc=1
done
\$PY scripts/device_bench.py junit \"\$LOGS\"/gpu-tests-*.xml --no-skips || rc=1
exit \$rc" \
    "pytest -m gpu (none may skip)"
# The service's tests that build the app in-process read KRONOS_DEVICE: with it set, they run on the GPU.
step service-cuda 50 \
    "rc=0
service=(); for f in tests/service/test_device_readiness.py tests/service/test_app_inprocess.py tests/service/test_forecasting.py tests/service/test_batching_scheduler.py; do if [ -f \"\$f\" ]; then service+=(\"\$f\"); fi; done
model=(); for f in tests/model/test_devices_and_cli.py; do if [ -f \"\$f\" ]; then model+=(\"\$f\"); fi; done
export KRONOS_DEVICE=\$DEVICE KRONOS_DEVICE_FALLBACK=refuse
$PYTEST --junitxml=\"\$LOGS/service-cuda-service.xml\" \"\${service[@]}\" || rc=1
$PYTEST --junitxml=\"\$LOGS/service-cuda-model.xml\" \"\${model[@]}\" || rc=1
\$PY scripts/device_bench.py junit \"\$LOGS\"/service-cuda-*.xml || rc=1
exit \$rc" \
    "service and device tests with KRONOS_DEVICE=$DEVICE (test_device_readiness skips where CUDA exists)"
step oom 35 \
    "\$PY scripts/device_oom_check.py --device \$DEVICE --out \"\$LOGS/oom.json\"" \
    "GPU filled until a large batch fails for real; forecast_splitting must answer every series"
step decode-small 35 \
    "\$PY scripts/device_bench.py decode --device \$DEVICE --shape small -- --repeats 3" \
    "benchmarks/decode.py, fp32, Kronos-small shape: recompute (reference path) vs fast, same GPU"
step decode-base 40 \
    "\$PY scripts/device_bench.py decode --device \$DEVICE --shape base -- --repeats 2" \
    "benchmarks/decode.py, fp32, Kronos-base shape: recompute (reference path) vs fast, same GPU"
if grep -q -e '--precision' benchmarks/decode.py; then
    step decode-bf16 35 "\$PY scripts/device_bench.py decode --device \$DEVICE --shape small -- --repeats 1 --precision bf16" \
        "benchmarks/decode.py in bf16"
elif grep -q -e '--dtype' benchmarks/decode.py; then
    step decode-bf16 35 "\$PY scripts/device_bench.py decode --device \$DEVICE --shape small -- --repeats 1 --dtype bfloat16" \
        "benchmarks/decode.py in bf16"
else
    skip decode-bf16 35 "benchmarks/decode.py has no precision option: fp32 only, bf16 not measured"
fi
step serve 105 \
    "\$PY scripts/device_bench.py serve --device \$DEVICE -- --sizes small --clients 8,32,128 --modes step,request,off --no-mixed --no-ceiling --small-seconds 3" \
    "benchmarks/serve.py, servers on $DEVICE: step vs request vs off at 8, 32, 128 clients (100/20, 3 s a case)"
if [ -f benchmarks/universe.py ]; then
    step universe 25 \
        "\$PY benchmarks/universe.py --device \$DEVICE --series 64" \
        "benchmarks/universe.py: predict_df vs a loop of predict, 64 real series, Kronos-small shape"
else
    skip universe 25 "benchmarks/universe.py does not exist yet"
fi
step nvidia-smi-after 8 \
    "nvidia-smi && nvidia-smi --query-gpu=index,name,memory.total,memory.used,utilization.gpu,temperature.gpu,clocks.sm,driver_version --format=csv" \
    "the GPU after the checks"

total=0
worst=0
for i in "${!NAMES[@]}"; do
    if ((BOUNDS[i] > 0)); then total=$((total + BOUNDS[i] + KILL_GRACE_S)); fi
    worst=$((worst + RESERVES[i] + KILL_GRACE_S))
done

if [ -n "${OUT:-}" ]; then RESULTS=$OUT; else RESULTS=$ROOT/device-results; fi

if ((dry_run)); then
    echo "device-check plan (--dry-run: nothing runs); results to ${OUT:-device-results/}; device $DEVICE"
    echo "each step: timeout -k ${KILL_GRACE_S} BOUND bash -c '$STEP_SHELL_OPTIONS COMMANDS'"
    for i in "${!NAMES[@]}"; do
        if [ -z "${COMMANDS[$i]}" ]; then
            printf 'SKIP %s bound=0s reserve=%ss :: %s\n' "${NAMES[$i]}" "${RESERVES[$i]}" "${NOTES[$i]}"
        else
            printf 'STEP %s bound=%ss :: %s\n' "${NAMES[$i]}" "${BOUNDS[$i]}" "${NOTES[$i]}"
            printf '    %s\n' "${COMMANDS[$i]//$'\n'/$'\n'    }"
        fi
    done
    printf 'TOTAL bound=%ss worst=%ss limit=%ss (each step its bound + %ss to kill it; worst: skipped steps too)\n' \
        "$total" "$worst" "$TOTAL_LIMIT_S" "$KILL_GRACE_S"
    exit 0
fi
if ((worst > TOTAL_LIMIT_S)); then
    echo "the bounds add up to $worst s, over $TOTAL_LIMIT_S s" >&2
    exit 2
fi

# --- the run ------------------------------------------------------------------------------------
mkdir -p "$RESULTS"
rm -f "$RESULTS"/summary.md "$RESULTS"/summary.json "$RESULTS"/steps.log "$RESULTS"/logs.tar.gz "$RESULTS"/oom.json
if [ -n "${OUT:-}" ]; then
    LOGS=$(mktemp -d "${TMPDIR:-/tmp}/device-check.XXXXXX") # $OUT brings back 8 files at most
else
    LOGS=$RESULTS/logs
    rm -rf "$LOGS"
    mkdir -p "$LOGS"
fi
export PY=$PYTHON DEVICE LOGS
# The repository first (its model/, services/, tests/), then the carried wheels, then the image's packages.
export PYTHONPATH="$ROOT:$ROOT/$SITE${PYTHONPATH:+:$PYTHONPATH}"
export PATH="$ROOT/$SITE/bin:$PATH"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 PYTEST_DISABLE_PLUGIN_AUTOLOAD=1

STARTED=$(date -u +%Y-%m-%dT%H:%M:%SZ)
GPU=$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | head -1 || true)
COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
STATUS=()
SECS=()
PEAKS=()

json_string() {
    local s=${1//\\/\\\\}
    s=${s//\"/\\\"}
    printf '"%s"' "$s"
}

write_summary() {
    local i md=$RESULTS/summary.md json=$RESULTS/summary.json
    {
        echo "# device-check, $STARTED"
        echo
        echo "GPU: ${GPU:-unknown (no nvidia-smi)}; commit $COMMIT; device $DEVICE; python: $PY"
        echo
        echo "| step | status | seconds | bound s | peak GPU memory used, MiB (nvidia-smi, whole GPU) | what |"
        echo "|---|---|---:|---:|---:|---|"
        for i in "${!NAMES[@]}"; do
            echo "| ${NAMES[$i]} | ${STATUS[$i]:-not run} | ${SECS[$i]:-} | ${BOUNDS[$i]} | ${PEAKS[$i]:-} | ${NOTES[$i]} |"
        done
    } >"$md"
    {
        printf '{"started": %s, "gpu": %s, "commit": %s, "device": %s, "steps": [' \
            "$(json_string "$STARTED")" "$(json_string "$GPU")" "$(json_string "$COMMIT")" "$(json_string "$DEVICE")"
        for i in "${!NAMES[@]}"; do
            ((i > 0)) && printf ', '
            printf '{"step": %s, "status": %s, "seconds": %s, "bound_s": %s, "peak_gpu_mib": %s, "what": %s}' \
                "$(json_string "${NAMES[$i]}")" "$(json_string "${STATUS[$i]:-not run}")" "${SECS[$i]:-null}" \
                "${BOUNDS[$i]}" "${PEAKS[$i]:-null}" "$(json_string "${NOTES[$i]}")"
        done
        printf ']}\n'
    } >"$json"
}

# shellcheck disable=SC2317 # called by the EXIT trap
finish() {
    write_summary
    [ -f "$LOGS/oom.json" ] && cp "$LOGS/oom.json" "$RESULTS/oom.json"
    tar -czf "$RESULTS/logs.tar.gz" -C "$LOGS" . 2>/dev/null || true
    if [ -n "${OUT:-}" ]; then rm -rf "$LOGS"; fi
}
trap finish EXIT

selected() {
    [ -z "$only" ] || [ "$1" = install ] || [[ ",$only," == *",$1,"* ]]
}

failed=0
for i in "${!NAMES[@]}"; do
    name=${NAMES[$i]}
    if [ -z "${COMMANDS[$i]}" ]; then
        STATUS[i]=skipped
        write_summary
        continue
    fi
    if ! selected "$name"; then
        STATUS[i]="not selected"
        continue
    fi
    log=$LOGS/$name.log
    echo "== $name (bound ${BOUNDS[$i]} s): ${NOTES[$i]}"
    sampler=""
    if command -v nvidia-smi >/dev/null 2>&1; then
        nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 250 >"$LOGS/$name.gpu-mem" 2>/dev/null &
        sampler=$!
    fi
    start=$(date +%s.%N)
    if timeout -k "$KILL_GRACE_S" "${BOUNDS[$i]}" bash -c "$STEP_SHELL_OPTIONS ${COMMANDS[$i]}" >"$log" 2>&1; then
        rc=0
    else
        rc=$?
    fi
    end=$(date +%s.%N)
    if [ -n "$sampler" ]; then
        kill "$sampler" 2>/dev/null || true
        wait "$sampler" 2>/dev/null || true
        PEAKS[i]=$(awk '$1 ~ /^[0-9]+$/ && $1 > m {m = $1} END {if (m != "") print m}' "$LOGS/$name.gpu-mem")
    fi
    SECS[i]=$(awk -v a="$start" -v b="$end" 'BEGIN {printf "%.1f", b - a}')
    case $rc in
        0) STATUS[i]=ok ;;
        124 | 137) STATUS[i]="TIMEOUT (over ${BOUNDS[$i]} s)" failed=1 ;;
        *) STATUS[i]="FAILED (exit $rc)" failed=1 ;;
    esac
    echo "   ${STATUS[$i]} in ${SECS[$i]} s; peak GPU memory ${PEAKS[$i]:-n/a} MiB"
    tail -n 5 "$log" | sed 's/^/   | /'
    {
        echo "===== $name: ${STATUS[$i]}, ${SECS[$i]} s (bound ${BOUNDS[$i]} s) ====="
        echo "\$ ${COMMANDS[$i]}"
        tail -c 200000 "$log"
        echo
    } >>"$RESULTS/steps.log"
    write_summary
done

write_summary
echo
cat "$RESULTS/summary.md"
exit "$failed"
