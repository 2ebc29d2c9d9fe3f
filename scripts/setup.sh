# Sourced by demo.sh and test.sh: a virtual environment in .venv with barlowtwins installed (editable),
# and, on Debian/Ubuntu, the Fashion-MNIST package when its files are not there yet.
set -euo pipefail
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
# shellcheck disable=SC1091
. .venv/bin/activate
python -m pip install --quiet --disable-pip-version-check -e ".[test]"

if [ "${1:-}" = "--with-data" ] && [ ! -e /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
    if command -v apt-get >/dev/null 2>&1; then
        SUDO=""
        [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1 && SUDO="sudo"
        echo "installing Fashion-MNIST (Debian package dataset-fashion-mnist)"
        $SUDO apt-get update -qq && $SUDO apt-get install -y -qq dataset-fashion-mnist >/dev/null || \
            echo "could not install dataset-fashion-mnist; barlowtwins will try to download Fashion-MNIST instead"
    fi
fi
