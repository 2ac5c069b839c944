#!/usr/bin/env bash
# Builds static-link probes and prints binary sizes + dynamic deps.
# libopenblas.a needs no libgfortran when only cblas_* (BLAS) objects are referenced
set -e; cd "$(dirname "$0")"; D=/usr/lib/x86_64-linux-gnu
rustc -O -C strip=symbols base.rs -o base
rustc -O -C strip=symbols cblas_static.rs -o openblas_static -L $D/openblas-pthread -l static=openblas 2>&1 | tail -3 || true
rustc -O -C strip=symbols cblas_static.rs -o blis_static -L $D/blis-pthread -l static=blis -l dylib=pthread -l dylib=m 2>&1 | tail -3 || true
for f in base openblas_static blis_static; do [ -x $f ] && { echo "== $f $(stat -c %s $f) bytes"; ./$f; ldd $f | awk '{print "   "$1}'; }; done
