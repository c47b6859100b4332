#!/usr/bin/env bash
# Option C: deploy a CPU and a GPU instance (docker-compose.hybrid.yml); --with-lb adds nginx-lb and
# checks that single forecasts reach the CPU, batches the GPU, and the X-Kronos-Device overrides.
# Usage: ./deploy-hybrid.sh [up|down|logs [SERVICE]|status] [--dry-run] [--no-build] [--timeout SECONDS] [--with-lb]; --help for more.
set -euo pipefail

KRONOS_MODE=hybrid
# shellcheck source=deploy-common.sh
source "$(dirname "${BASH_SOURCE[0]}")/deploy-common.sh"
kronos_deploy_main "$@"
