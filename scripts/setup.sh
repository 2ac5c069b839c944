#!/usr/bin/env bash
# Installs the system packages that building tbc needs on Debian 12 (bookworm):
# Debian's LLVM/MLIR 22 (static libraries for melior/mlir-sys and inkwell/llvm-sys),
# libclang for bindgen, the C/C++ compiler for tblgen and the tests' `cc`, and the
# libraries that `llvm-config --system-libs` names (zstd, z3, zlib, libxml2).
#
# Idempotent: installs only what dpkg-query reports missing, runs `apt-get update`
# only when something must be installed, uses sudo only when not root. A no-op
# when everything is present. Usage: scripts/setup.sh
set -euo pipefail

LLVM_PREFIX=/usr/lib/llvm-22
PACKAGES=(
  build-essential   # cc/c++ (tblgen's C++ shim, linking test libraries, the Ascend C emulation tests)
  cmake             # the Ascend kernel project tbc writes (--emit ascend-c), built in its test
  llvm-22-dev       # llvm-config, LLVM headers and static libraries (inkwell, melior)
  libmlir-22-dev    # MLIR headers and static libMLIR*.a / libMLIRCAPI*.a (mlir-sys)
  mlir-22-tools     # mlir-translate (the Ascend kernels' C++ emitter), mlir-opt (MLIR_NOTES.md recipes)
  clang-22          # clang for hand-checking generated .ll
  libclang-22-dev   # libclang.so for bindgen (mlir-sys builds its bindings)
  libpolly-22-dev   # `llvm-config --link-static` fails without libPolly*.a
  libzstd-dev libz3-dev libxml2-dev zlib1g-dev   # llvm-config --system-libs
  fonts-dejavu-core # the font `tbc plot` draws its labels with
  openmpi-bin libopenmpi3   # mpirun and libmpi.so.40: data-parallel tests (--distribute true)
)

log() { printf 'setup: %s\n' "$*"; }

missing=()
for package in "${PACKAGES[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$package" 2>/dev/null || true)
  if [[ "$status" != "install ok installed" ]]; then
    missing+=("$package")
  fi
done

if ((${#missing[@]} == 0)); then
  log "all ${#PACKAGES[@]} system packages present"
else
  sudo=()
  if [[ $(id -u) -ne 0 ]]; then
    command -v sudo >/dev/null || { log "not root and no sudo: install ${missing[*]} by hand"; exit 1; }
    sudo=(sudo)
  fi
  export DEBIAN_FRONTEND=noninteractive
  log "missing: ${missing[*]}"
  log "running: ${sudo[*]:+${sudo[*]} }apt-get update"
  "${sudo[@]}" apt-get update -q
  log "running: ${sudo[*]:+${sudo[*]} }apt-get install -y --no-install-recommends ${missing[*]}"
  "${sudo[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# Sanity checks on what mlir-sys / llvm-sys / tblgen will ask llvm-config for.
llvm_config="$LLVM_PREFIX/bin/llvm-config"
version=$("$llvm_config" --version)
[[ "$version" == 22.* ]] || { log "expected LLVM 22 in $LLVM_PREFIX, found $version"; exit 1; }
"$llvm_config" --link-static --libnames >/dev/null \
  || { log "'llvm-config --link-static --libnames' fails: static LLVM libraries incomplete"; exit 1; }
for lib in libMLIRCAPIIR.a libMLIRCAPIRegisterEverything.a libMLIRCAPITarget.a; do
  [[ -f "$LLVM_PREFIX/lib/$lib" ]] || { log "missing $LLVM_PREFIX/lib/$lib (libmlir-22-dev)"; exit 1; }
done
log "LLVM/MLIR $version ready in $LLVM_PREFIX (static libraries; see .cargo/config.toml [env])"

# ptxas from PyPI: `make test` assembles every generated GPU kernel (no GPU needed).
bash "$(dirname "$0")/install-ptxas.sh"
