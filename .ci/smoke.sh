#!/usr/bin/env bash
# The fast variant of the offline smoke workflow (reproduce.py --smoke --fast: every step, from
# the synthetic download to the notebook's figures, at toy scale) in a temporary folder, so
# that a broken step fails CI. Uses the `python` on PATH (.ci/run puts its venv first).
set -euo pipefail
cd "$(dirname "$0")/.."
root="$(mktemp -d -t lppad-smoke-XXXXXX)"
trap 'rm -rf "$root"' EXIT
python reproduce.py --smoke --fast --smoke-root "$root"
