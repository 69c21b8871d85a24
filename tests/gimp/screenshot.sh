#!/usr/bin/env bash
# Reproduces docs/dialog.png (see screenshot.py): GIMP 3.0.4 under Xvfb in the Debian 13 tree,
# the Style Transfer dialog open over a photo layer and a painting layer, with a finished preview
# (random weights). Not part of the test run. Needs root and the tree built by
# `tests/gimp/make-tree.sh trixie`.
#   usage: tests/gimp/screenshot.sh [OUT.png]
set -euo pipefail
cd "$(dirname "$0")/../.."
out=$(realpath -m "${1:-docs/dialog.png}")
exec python3 -m tests.gimp.screenshot "$out"
