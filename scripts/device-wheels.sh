#!/usr/bin/env bash
# Fetch, here, the wheels that the GPU machine's image lacks, for scripts/device-check.sh to install there
# (no network on that machine). CPython 3.12, manylinux x86_64, the versions pinned in constraints.txt.
#
#   scripts/device-wheels.sh                 # resolve, download into .device-wheels/, list them with their size
#   scripts/device-wheels.sh --resolve-only  # resolve only (pip install --dry-run --report): nothing downloaded
#   scripts/device-wheels.sh --dest DIR      # another folder (default .device-wheels, ignored by git)
#
# What is fetched: the closure of pyproject.toml's runtime dependencies (what `pip install -e .` needs)
# and of the test and benchmark packages that device-check.sh runs (pytest, hypothesis, httpx, and
# backtesting for its EURUSD/GOOG candles), minus
#   - torch and torch's own CUDA stack (nvidia-*, triton, cuda-*): never; the image's CUDA build is the one;
#   - IMAGE_PROVIDED below: big packages the image already has, whose wheels would not fit the 64 MiB
#     that the device tool carries (pyarrow alone is 52 MiB, numpy 16, pandas 11, pillow 7);
#     device-check.sh records the versions it finds there.
# DATA_PACKAGES come without their dependencies: benchmarks/universe.py reads candle files inside them
# (model/training/corpus.py finds them without importing the package). Everything else comes at its
# pinned version, also where the image has another one, so the GPU run uses the versions CI uses. The
# folder holds requirements.txt (name==version, one per wheel), which device-check.sh installs with
# --no-index --no-deps.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
dest=.device-wheels
resolve_only=0
while (($#)); do
    case "$1" in
        --resolve-only | --dry-run) resolve_only=1 ;;
        --dest)
            dest=${2:?--dest needs a folder}
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

# The device tool carries at most 64 MiB: the working tree plus the carried wheels.
CARRY_LIMIT_MIB=64
# In the GPU image ("Python packages already there" in the device tool's KINDS.md) and big.
IMAGE_PROVIDED=(pyarrow numpy pandas pillow)
# From the dev extra: what device-check.sh's tests and benchmarks import.
TEST_PACKAGES=(pytest hypothesis httpx backtesting)
# From the dev extra, files only (no dependencies): the real candles of benchmarks/universe.py.
DATA_PACKAGES=(bokeh-sampledata gym-anytrading arch)
PLATFORM_ARGS=(
    --only-binary=:all: --python-version 3.12 --implementation cp --abi cp312
    --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux1_x86_64
    --platform manylinux2010_x86_64 --platform manylinux_2_12_x86_64 --platform manylinux_2_24_x86_64
    --platform manylinux_2_27_x86_64 --platform manylinux_2_28_x86_64 --platform manylinux_2_31_x86_64
    --platform manylinux_2_34_x86_64 --platform manylinux_2_35_x86_64
)

work=$(mktemp -d "${TMPDIR:-/tmp}/device-wheels.XXXXXX")
trap 'rm -rf "$work"' EXIT

# The top-level requirements: pyproject's runtime dependencies (their ranges) without torch, and the
# test and data packages with the dev extra's ranges.
"$PYTHON" - "$work" "${TEST_PACKAGES[*]}" "${DATA_PACKAGES[*]}" <<'EOF'
import re
import sys

try:
    import tomllib
except ImportError:
    sys.exit("scripts/device-wheels.sh reads pyproject.toml with tomllib: Python 3.11 or newer (set PYTHON)")

work, tests, data = sys.argv[1], set(sys.argv[2].split()), set(sys.argv[3].split())
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
name = lambda req: re.split(r"[\s<>=!~;\[]", req, maxsplit=1)[0].lower().replace("_", "-")
dev = project["optional-dependencies"]["dev"]
lines = [r for r in project["dependencies"] if name(r) != "torch"] + [r for r in dev if name(r) in tests]
data_lines = [r for r in dev if name(r) in data]
missing = (tests | data) - {name(r) for r in lines + data_lines}
if missing:
    sys.exit(f"not in pyproject.toml's dev extra: {sorted(missing)}")
open(f"{work}/requirements.in", "w").write("\n".join(lines) + "\n")
open(f"{work}/data.in", "w").write("\n".join(data_lines) + "\n")
EOF

echo "resolving for CPython 3.12, manylinux x86_64, pinned by constraints.txt:" >&2
sed 's/^/  /' "$work/requirements.in" >&2
sed 's/^/  (files only) /' "$work/data.in" >&2
# --dry-run --report resolves without installing or downloading whole wheels (their metadata only).
resolve() { # report requirements [pip args]
    local report=$1 requirements=$2
    shift 2
    # pip's own log goes to a file, shown when it fails (a network failure is told apart there).
    if ! "$PYTHON" -m pip install --disable-pip-version-check --dry-run --ignore-installed \
        --report "$report" --target "$work/target" "${PLATFORM_ARGS[@]}" -c constraints.txt -r "$requirements" "$@" \
        >"$work/pip.log" 2>&1; then
        grep -v '^WARNING: Location .* is ignored' "$work/pip.log" | tail -n 40 >&2
        echo "the resolution failed (pip's messages above)" >&2
        return 1
    fi
}
resolve "$work/report.json" "$work/requirements.in"
resolve "$work/data.json" "$work/data.in" --no-deps

# The resolved set, minus what never travels: name==version and the wheel file pip chose.
"$PYTHON" - "$work/pinned.txt" "${IMAGE_PROVIDED[*]}" "$work/report.json" "$work/data.json" <<'EOF'
import json
import re
import sys

out, provided, reports = sys.argv[1], set(sys.argv[2].split()), sys.argv[3:]
keep, left_out = {}, []
for path in reports:
    for item in json.load(open(path))["install"]:
        name = re.sub(r"[-_.]+", "-", item["metadata"]["name"]).lower()
        version = item["metadata"]["version"]
        wheel = item["download_info"]["url"].rsplit("/", 1)[-1]
        if name == "torch" or name.startswith(("nvidia-", "cuda-")) or name == "triton":
            left_out.append(f"{name}=={version} (torch's CUDA stack: the image's)")
        elif name in provided:
            left_out.append(f"{name}=={version} (the image has it; too big to carry)")
        else:
            keep[name] = (version, wheel)
with open(out, "w") as f:
    for name, (version, wheel) in sorted(keep.items()):
        f.write(f"{name}=={version} {wheel}\n")
for line in left_out:
    print(f"left out: {line}", file=sys.stderr)
EOF

if ((resolve_only)); then
    echo "resolved $(wc -l <"$work/pinned.txt") packages (resolve only, nothing downloaded):"
    cat "$work/pinned.txt"
    exit 0
fi

mkdir -p "$dest"
rm -f "$dest"/*.whl "$dest/requirements.txt"
cut -d' ' -f1 "$work/pinned.txt" >"$dest/requirements.txt"
# --no-deps: the list is already the whole closure, each package once.
"$PYTHON" -m pip download --quiet --disable-pip-version-check --no-deps "${PLATFORM_ARGS[@]}" \
    -d "$dest" -r "$dest/requirements.txt"

count=$(find "$dest" -maxdepth 1 -name '*.whl' | wc -l)
expected=$(wc -l <"$dest/requirements.txt")
if ((count != expected)); then
    echo "expected $expected wheels in $dest, found $count" >&2
    exit 1
fi
echo "fetched $count wheels into $dest/:"
(cd "$dest" && du -k -- *.whl | sort -rn | awk '{printf "  %8.1f MiB  %s\n", $1 / 1024, $2}')
wheels_kib=$(du -sk "$dest" | cut -f1)
tree_kib=$(git ls-files -z --cached --others --exclude-standard | xargs -0 du -k 2>/dev/null | awk '{s += $1} END {print s + 0}')
awk -v w="$wheels_kib" -v t="$tree_kib" -v limit="$CARRY_LIMIT_MIB" 'BEGIN {
    printf "total: %.1f MiB of wheels; with the working tree (%.1f MiB) %.1f MiB of the %d MiB the device tool carries\n",
        w / 1024, t / 1024, (w + t) / 1024, limit
}'
if ((wheels_kib + tree_kib > CARRY_LIMIT_MIB * 1024)); then
    echo "too big for the device tool: leave more out (IMAGE_PROVIDED)" >&2
    exit 1
fi
echo "on the GPU machine: run the device tool with carry [\"$dest\"] and the command: bash scripts/device-check.sh"
