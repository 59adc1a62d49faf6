#!/usr/bin/env bash
# Install what the tests need, lint, then run the whole test suite (CPU only, a few minutes).
# Usage: bash scripts/test.sh [extra pytest arguments]
set -euo pipefail
cd "$(dirname "$0")/.."

python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
ruff check .

# pytest exits 5 when it collected no test: that must fail too, so no exit code is masked here.
python -m pytest -q "$@"
