#!/usr/bin/env bash
# The main job: `make demo` runs this inside the project's virtual environment.
set -euo pipefail
cd "$(dirname "$0")/../.."
exec python examples/demo/demo.py "$@"
