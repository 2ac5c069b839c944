#!/usr/bin/env bash
# Installs NVIDIA's PTX assembler `ptxas` (no GPU, no CUDA toolkit needed) into .tools/ptxas/bin
# from the PyPI wheel nvidia-cuda-nvcc-cu12 (GPU_NOTES.md §2), so `make test` can assemble every
# generated GPU kernel for sm_80 and sm_90 and check registers and spills. Needs python3 with pip
# and PyPI (pip checks the wheel against the index). Idempotent.
# Usage: scripts/install-ptxas.sh
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=.tools/ptxas
VERSION=12.9.86
if [[ -x "$DEST/bin/ptxas" ]] && "$DEST/bin/ptxas" --version >/dev/null 2>&1; then
  echo "install-ptxas: $DEST/bin/ptxas present ($("$DEST/bin/ptxas" --version | tail -1))"
  exit 0
fi
command -v python3 >/dev/null || { echo "install-ptxas: python3 with pip is needed (apt-get install python3-pip)"; exit 1; }
mkdir -p "$DEST/bin"
wheels=$(mktemp -d)
trap 'rm -rf "$wheels"' EXIT
echo "install-ptxas: pip download nvidia-cuda-nvcc-cu12==$VERSION (about 40 MiB)"
python3 -m pip download -q --no-deps --only-binary=:all: --platform manylinux2014_x86_64 \
  -d "$wheels" "nvidia-cuda-nvcc-cu12==$VERSION"
python3 - "$wheels" "$DEST/bin/ptxas" <<'PY'
import glob, os, sys, zipfile
wheels, dest = sys.argv[1], sys.argv[2]
(wheel,) = glob.glob(os.path.join(wheels, "*.whl"))
with zipfile.ZipFile(wheel) as z:
    name = next(n for n in z.namelist() if n.endswith("/bin/ptxas"))
    tmp = dest + ".tmp"
    with open(tmp, "wb") as f:
        f.write(z.read(name))
    os.chmod(tmp, 0o755)
    os.replace(tmp, dest)
PY
echo "install-ptxas: $DEST/bin/ptxas installed: $("$DEST/bin/ptxas" --version | tail -1)"
