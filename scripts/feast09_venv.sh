#!/usr/bin/env bash
# Build Feast 0.9's Python SDK (feast==0.9.5.2) in a virtual environment of its own, for the
# tests in tests/feast09/ that run it as a client against potluck's servers.
#   scripts/feast09_venv.sh            -> .venv-feast09 (or $POTLUCK_FEAST09_VENV)
# Its pins (pandas ~1.0, pyarrow 2, grpcio 1.31, numpy < 1.20) do not install on Python 3.11, so
# feast itself goes in with --no-deps and the packages it imports follow, unpinned where they can
# be. pip's own cache (~/.cache/pip) keeps a rebuild offline-fast; a venv that already holds this
# exact recipe and imports feast.Client is left alone (well under a second).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${POTLUCK_FEAST09_VENV:-$PWD/.venv-feast09}
PYTHON=${PYTHON:-python3}
FEAST=feast==0.9.5.2
DEPS=(
  "protobuf==3.20.3" grpcio pandas pyarrow numpy PyYAML tabulate toml tqdm "Click<8"
  "googleapis-common-protos==1.56.4" fastavro pandavro google-api-core "setuptools<81"
)
RECIPE="$FEAST ${DEPS[*]}"
MARK=$VENV/.potluck-recipe

check() {
  PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION=python FEAST_TELEMETRY=False \
    "$VENV/bin/python" -c "import feast; from feast import Client; assert feast.__version__" \
    >/dev/null 2>&1
}

if [ -f "$MARK" ] && [ "$(cat "$MARK")" = "$RECIPE" ] && check; then
  exit 0
fi
echo "feast09_venv: building $VENV ($FEAST)" >&2
rm -rf "$VENV"
"$PYTHON" -m venv "$VENV"
LOG=$VENV/pip.log
# pip lists every broken pin of feast's as an error; that is expected here, so its output goes to
# a log that is shown only when an install fails.
if ! { "$VENV/bin/pip" install -q --disable-pip-version-check --no-deps "$FEAST" &&
       "$VENV/bin/pip" install -q --disable-pip-version-check "${DEPS[@]}"; } >"$LOG" 2>&1; then
  cat "$LOG" >&2
  echo "feast09_venv: pip failed (log: $LOG)" >&2
  exit 1
fi
if ! check; then
  echo "feast09_venv: $VENV was built but cannot import feast.Client" >&2
  exit 1
fi
echo "$RECIPE" > "$MARK"
