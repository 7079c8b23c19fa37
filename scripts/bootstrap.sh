#!/usr/bin/env bash
# Set up everything soundalike needs on a fresh machine: system packages (when we may install
# them), a virtual environment in .venv with the exact versions in requirements.lock, and the
# package itself (editable). Safe to re-run: it skips what is already in place.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}

need_apt=()
command -v ffmpeg >/dev/null 2>&1 || need_apt+=(ffmpeg)     # pydub fallback (m4a/aac/wma), test fixtures
command -v java >/dev/null 2>&1 || need_apt+=(openjdk-17-jre-headless)  # Spark 4.1 needs Java 17+
# The web app's browser test drives Debian's Chromium with Playwright (Playwright's own browser
# download is not used); a font so that the page and its screenshot render text.
command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || need_apt+=(chromium fonts-dejavu-core)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "bootstrap: installing system packages: ${need_apt[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
  else
    echo "bootstrap: warning: missing ${need_apt[*]} (install them with your package manager)" >&2
  fi
fi

# LAION CLAP checkpoints load with laion-clap's model code; its declared pins (numpy<2, wandb, ...)
# clash with the lock, so it goes in without dependencies (what it imports is in the lock).
LAION_CLAP="laion-clap==1.1.7"

stamp="$VENV/.soundalike-installed"
lock_sum=$( (cat requirements.lock pyproject.toml; echo "$LAION_CLAP") | sha256sum | cut -c1-16)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$lock_sum" ]; then
  exit 0
fi
echo "bootstrap: creating $VENV from requirements.lock (torch is large: a few minutes the first time)"
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade "pip==26.3"
"$VENV/bin/python" -m pip install -q -r requirements.lock
"$VENV/bin/python" -m pip install -q --no-deps "$LAION_CLAP"
"$VENV/bin/python" -m pip install -q --no-deps --no-build-isolation -e .
echo "$lock_sum" > "$stamp"
echo "bootstrap: ready ($("$VENV/bin/python" --version))"
