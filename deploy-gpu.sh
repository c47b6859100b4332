#!/usr/bin/env bash
# Option B: deploy the Kronos service on an NVIDIA GPU (docker-compose.gpu.yml); checks nvidia-smi and
# Docker's NVIDIA runtime before anything starts.
# Usage: ./deploy-gpu.sh [up|down|logs [SERVICE]|status] [--dry-run] [--no-build] [--timeout SECONDS]; --help for more.
set -euo pipefail

KRONOS_MODE=gpu
# shellcheck source=deploy-common.sh
source "$(dirname "${BASH_SOURCE[0]}")/deploy-common.sh"
kronos_deploy_main "$@"
