#!/usr/bin/env bash
# The install of `make setup` two ways, in fresh venvs, one after the other (same machine state):
#   pip      pip byte-compiles every installed file itself, on one core (pip's default)
#   parallel pip install --no-compile, then python -m compileall -j 0 (all cores): the Makefile
# Prints seconds per mode and the first import of the demo's modules (bytecode already there).
# Usage: bash benchmarks/bench_install.sh   (~8 min; writes /tmp/bench-venv-*, removed at the end)
set -euo pipefail
cd "$(dirname "$0")/.."
TORCH_SPEC="${TORCH_SPEC:-torch==2.14.1 torchvision==0.29.1}"
now() { date +%s.%N; }
for mode in pip parallel; do
  venv=/tmp/bench-venv-$mode
  rm -rf "$venv"; python3 -m venv "$venv"
  flag=""; [ "$mode" = parallel ] && flag="--no-compile"
  t0=$(now)
  "$venv/bin/python" -m pip install -q $flag --upgrade pip 2>/dev/null
  "$venv/bin/python" -m pip install -q $flag $TORCH_SPEC 2>/dev/null
  "$venv/bin/python" -m pip install -q $flag -e ".[dev]" 2>/dev/null
  if [ "$mode" = parallel ]; then "$venv/bin/python" -m compileall -qq -j 0 "$venv/lib" >/dev/null || true; fi
  t1=$(now)
  "$venv/bin/python" -c "import meg_lightning.demo, meg_lightning.evaluation.sweep, meg_lightning.power.train, meg_lightning.codecs.train"
  t2=$(now)
  echo "$mode install_s=$(echo "$t1 - $t0" | bc) first_import_s=$(echo "$t2 - $t1" | bc)"
  rm -rf "$venv"
done
