#!/usr/bin/env bash
# Create (once) the Python venv that Frugal's checkers use, and print its python's path.
#
#   PY=$(scripts/setup-python.sh) && "$PY" scripts/gguf_dump.py model.gguf
#
# Venv: ${FRUGAL_CACHE:-$HOME/.cache/frugal}/venv, with gguf==0.19.0 + numpy, and jsonschema
# (the reports' schema check, scripts/validate-report.py) — all versions pinned below —
# installed by pip from PyPI. A re-run only compares the venv's
# stamp with the pins (no pip, no network). If the stamp is missing (first run, an
# interrupted run, or other pins) the venv is rebuilt from scratch. Progress goes to
# stderr; stdout is only the python path. Base interpreter: $FRUGAL_PYTHON or python3
# (>= 3.11, needed by numpy 2.4).
set -Eeuo pipefail

REQUIREMENTS="\
gguf==0.19.0
numpy==2.4.6
PyYAML==6.0.4
tqdm==4.70.1
requests==2.34.2
certifi==2026.10.19.post1
charset-normalizer==3.5.3
idna==3.20
urllib3==2.8.0
jsonschema==4.26.0
jsonschema-specifications==2025.9.1
referencing==0.37.0
rpds-py==2026.9.1
attrs==26.1.0
typing-extensions==4.16.0
"

CACHE="${FRUGAL_CACHE:-${HOME:?HOME is not set; set FRUGAL_CACHE}/.cache/frugal}"
VENV="$CACHE/venv"
STAMP="$VENV/.frugal-requirements"
BASE="${FRUGAL_PYTHON:-python3}"

die() { printf 'error: setup-python: %s\n' "$*" >&2; exit 1; }
trap 'printf "error: setup-python: command failed (exit %s) at line %s: %s\n" $? $LINENO "$BASH_COMMAND" >&2' ERR

# Fast path: the stamp matches the pins and the interpreter is still there.
if [[ -x "$VENV/bin/python" && -f "$STAMP" && "$(<"$STAMP")"$'\n' == "$REQUIREMENTS" ]]; then
  printf '%s\n' "$VENV/bin/python"
  exit 0
fi

command -v "$BASE" >/dev/null 2>&1 || die "'$BASE' not found: install Python 3.11+ or set FRUGAL_PYTHON"
"$BASE" -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
  die "$("$BASE" --version 2>&1) is too old: numpy 2.4 needs Python 3.11+; set FRUGAL_PYTHON to a newer one"
{ mkdir -p -- "$CACHE" 2>/dev/null && [[ -w "$CACHE" ]]; } ||
  die "cannot create or write $CACHE: make it writable or point FRUGAL_CACHE at a writable directory"

if command -v flock >/dev/null 2>&1; then
  exec 9>>"$CACHE/.venv.lock"
  flock -w 900 9 || die "another setup-python.sh has held $CACHE/.venv.lock for 15 minutes"
  # Someone else may have built it while we waited.
  if [[ -x "$VENV/bin/python" && -f "$STAMP" && "$(<"$STAMP")"$'\n' == "$REQUIREMENTS" ]]; then
    printf '%s\n' "$VENV/bin/python"; exit 0
  fi
fi

printf 'setup-python: creating %s with %s\n' "$VENV" "$(tr '\n' ' ' <<<"$REQUIREMENTS")" >&2
rm -rf -- "$VENV"
"$BASE" -m venv "$VENV" > "$CACHE/.venv.log" 2>&1 || {
  sed 's/^/  /' "$CACHE/.venv.log" >&2
  die "'$BASE -m venv' failed (see above): on Debian install python3-venv, or set FRUGAL_PYTHON"
}
printf '%s' "$REQUIREMENTS" > "$VENV/requirements.txt"
if ! "$VENV/bin/python" -m pip install --disable-pip-version-check --no-input --no-deps \
      -r "$VENV/requirements.txt" > "$CACHE/.venv.log" 2>&1; then
  sed 's/^/  pip: /' "$CACHE/.venv.log" | tail -n 15 >&2
  die "pip install into $VENV failed (see above): is PyPI reachable? (check 'pip config list'); re-run to retry"
fi
"$VENV/bin/python" -c 'import gguf, numpy, jsonschema' 2>&1 | sed 's/^/  /' >&2 ||
  die "the venv was built but 'import gguf, numpy, jsonschema' fails (see above); delete $VENV and re-run"
"$VENV/bin/python" -m pip check > "$CACHE/.venv.log" 2>&1 || {
  sed 's/^/  /' "$CACHE/.venv.log" >&2
  die "the pinned requirements are inconsistent (see above); fix REQUIREMENTS in $0"
}
rm -f -- "$CACHE/.venv.log"
printf '%s' "$REQUIREMENTS" > "$STAMP"   # written last: marks the venv complete
printf '%s\n' "$VENV/bin/python"
