#!/usr/bin/env bash
# Set up and run the test suite (CPU only; the tests write the small data they need).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup.sh
python -m pytest -q "$@"
