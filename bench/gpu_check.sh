#!/usr/bin/env bash
# The reference training workload on a lent GPU, tutorial recipe vs the studio's, in one run.
# Installs nothing from the network: wheels carried in .whl/ (transformers and peft at the versions
# this project is tested with) go to a private folder, and the data encoded here by
# `.venv/bin/python bench/gpu_check.py --prepare` travels in bench/out/gpu/. See bench/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
[ -x .venv/bin/python ] && [ -z "${PYTHON:-}" ] && [ "${1:-}" = "--smoke" ] && PY=.venv/bin/python
if [ ! -f bench/out/gpu/examples.json.gz ]; then
  echo "bench/out/gpu/examples.json.gz is missing: run '.venv/bin/python bench/gpu_check.py --prepare' first" >&2
  exit 2
fi
if compgen -G ".whl/*.whl" > /dev/null && [ "$PY" != ".venv/bin/python" ]; then
  SITE="${TMPDIR:-/tmp}/lora-studio-wheels"
  "$PY" -m pip install --quiet --no-deps --no-index --disable-pip-version-check --target "$SITE" .whl/*.whl
  export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
fi
export TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 PYTHONWARNINGS=ignore
exec "$PY" bench/gpu_check.py "$@"
