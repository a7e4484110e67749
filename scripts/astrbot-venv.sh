#!/usr/bin/env bash
# Create (once) the virtualenv with the real AstrBot that the end-to-end test
# `tests/integration/astrbot.rs` runs. Cached under target/ so `cargo clean`
# removes it and repeated runs cost nothing.
#
#   scripts/astrbot-venv.sh [DIR]      # default: target/astrbot-venv
#
# AstrBot 4.14.6 is the newest release that installs on Python 3.11 (newer
# ones need 3.12); see shared/testing/astrbot.md. It is installed from
# deploy/astrbot.lock, exactly as the image installs it, so the end-to-end
# test tests the image's lock file. The venv is complete only when
# DIR/.complete names this lock file's hash, so an interrupted install (or a
# changed lock) is redone, not reused.
set -euo pipefail
cd "$(dirname "$0")/.."

version=4.14.6
dir=${1:-target/astrbot-venv}
python=${PYTHON:-python3}

lock=deploy/astrbot.lock
stamp="$version $(sha256sum "$lock" | cut -d' ' -f1)"
if [ -f "$dir/.complete" ] && [ "$(cat "$dir/.complete")" = "$stamp" ]; then
  exit 0
fi

rm -rf "$dir"
mkdir -p "$(dirname "$dir")"
"$python" -m venv "$dir"
"$dir/bin/pip" install --quiet --disable-pip-version-check --no-input --require-hashes --no-deps -r "$lock"
# Importing astrbot writes ./data (config) into the working directory: ask
# the package metadata instead of running it.
test "$("$dir/bin/python" -c 'import importlib.metadata as m; print(m.version("astrbot"))')" = "$version"
echo "$stamp" >"$dir/.complete"
