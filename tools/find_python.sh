#!/usr/bin/env bash
# Print the path of a Python >= 3.12 for `make` to build .venv with, or fail saying why.
# Order: $PYTHON if given; python3.12, python3.13 and python3 on PATH; pyenv's 3.12.x and
# 3.13.x (installed but not selected, so not on PATH as python3).
set -u
ok() { "$1" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)' >/dev/null 2>&1; }
if [ -n "${PYTHON:-}" ]; then
  if ok "$PYTHON"; then command -v "$PYTHON" || echo "$PYTHON"; exit 0; fi
  echo "find_python: PYTHON=$PYTHON is not a Python >= 3.12" >&2
  exit 1
fi
candidates=(python3.12 python3.13 python3)
root="$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")"
for dir in "$root"/versions/3.12* "$root"/versions/3.13*; do
  [ -x "$dir/bin/python3" ] && candidates+=("$dir/bin/python3")
done
for p in "${candidates[@]}"; do
  if ok "$p"; then command -v "$p"; exit 0; fi
done
echo "find_python: no Python >= 3.12 found; install one (e.g. pyenv install 3.12) or run make PYTHON=/path/to/python3.12" >&2
exit 1
