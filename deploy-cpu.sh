#!/usr/bin/env bash
# Option A: deploy the Kronos service on CPU (docker-compose.cpu.yml).
# Usage: ./deploy-cpu.sh [up|down|logs [SERVICE]|status] [--dry-run] [--no-build] [--timeout SECONDS]; --help for more.
set -euo pipefail

KRONOS_MODE=cpu
# shellcheck source=deploy-common.sh
source "$(dirname "${BASH_SOURCE[0]}")/deploy-common.sh"
kronos_deploy_main "$@"
