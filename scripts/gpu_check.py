"""Comparisons of the prepared GPU check (scripts/gpu-check.sh), standard library only (the GPU
machine has Python but not necessarily numpy or safetensors).

  gpu_check.py same A B              the tensors of A and B are bit-identical
  gpu_check.py close GOT WANT TOL    every float tensor within TOL (norm-wise relative; absolute
                                     against the kind's largest norm for round-off-of-zero
                                     tensors, as the Rust tests' OutputComparer)
  gpu_check.py amp GOT REF AMP_ERRORS KEY_PREFIX UNIT
                                     the mixed-precision rule of tests/tests/mixed_precision.rs:
                                     each tensor within max(2 x autocast's error, UNIT), params
                                     plus what their gradient error explains through Adam's first
                                     step, round-off-gradient params within one Adam step
  gpu_check.py last-ckpt DIR         prints the newest *.safetensors under DIR by step number

Exit status 0 when the check holds; one line of findings on stdout either way.
"""

import json
import math
import os
import re
import struct
import sys


def read(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    body = data[8 + n:]
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        a, b = info["data_offsets"]
        out[name] = (info["dtype"], info["shape"], body[a:b])
    return out


def values(t):
    dtype, _, raw = t
    if dtype == "F64":
        return list(struct.unpack(f"<{len(raw) // 8}d", raw))
    if dtype == "F32":
        return list(struct.unpack(f"<{len(raw) // 4}f", raw))
    if dtype == "F16":
        return list(struct.unpack(f"<{len(raw) // 2}e", raw))
    if dtype == "BF16":
        halves = struct.unpack(f"<{len(raw) // 2}H", raw)
        return [struct.unpack("<f", struct.pack("<I", h << 16))[0] for h in halves]
    if dtype in ("I32",):
        return list(struct.unpack(f"<{len(raw) // 4}i", raw))
    if dtype in ("I64",):
        return list(struct.unpack(f"<{len(raw) // 8}q", raw))
    if dtype in ("BOOL", "U8"):
        return list(raw)
    raise ValueError(dtype)


def is_float(t):
    return t[0] in ("F64", "F32", "F16", "BF16")


def norm(v):
    return math.sqrt(sum(x * x for x in v if math.isfinite(x)))


def diff_norm(a, b):
    return math.sqrt(sum((x - y) ** 2 for x, y in zip(a, b)))


class Comparer:
    """OutputComparer of tests/src/lib.rs."""

    def __init__(self, ref):
        self.max_norm = {}
        self.level = {}
        for n, t in ref.items():
            if is_float(t):
                k = n.split(".", 1)[0]
                self.max_norm[k] = max(self.max_norm.get(k, 0.0), norm(values(t)))
        self.ref = ref

    def roundoff(self, name):
        t = self.ref[name]
        level = 1e-12 if t[0] == "F64" else 1e-6
        return norm(values(t)) < level * self.max_norm.get(name.split(".", 1)[0], 0.0)

    def error(self, name, a, e):
        va, ve = values(a), values(e)
        for x, y in zip(va, ve):
            if not (math.isfinite(x) and math.isfinite(y)) and not (x == y or (math.isnan(x) and math.isnan(y))):
                return math.inf
        if self.roundoff(name):
            return diff_norm(va, ve) / self.max_norm[name.split(".", 1)[0]]
        n = norm(ve)
        d = diff_norm(va, ve)
        return d / n if n > 0 else d


def same(a_path, b_path):
    a, b = read(a_path), read(b_path)
    bad = [n for n in a if n not in b or a[n][2] != b[n][2] or a[n][1] != b[n][1]]
    bad += [n for n in b if n not in a]
    if bad:
        print(f"DIFFER in {len(bad)} tensors, e.g. {bad[:3]}")
        return 1
    print(f"bit-identical ({len(a)} tensors)")
    return 0


def close(got_path, want_path, tol):
    got, want = read(got_path), read(want_path)
    cmp = Comparer(want)
    worst, worst_name, bad = 0.0, "", []
    for name, e in want.items():
        if name not in got:
            bad.append(f"{name} missing")
            continue
        if not is_float(e):
            if values(got[name]) != values(e):
                bad.append(f"{name} differs")
            continue
        err = cmp.error(name, got[name], e)
        if err > worst:
            worst, worst_name = err, name
        if err > tol:
            bad.append(f"{name} {err:.2e}")
    status = "FAIL" if bad else "ok"
    print(f"{status}: {len(want)} tensors, worst {worst:.2e} ({worst_name}); over {tol:g}: {bad[:4]}")
    return 1 if bad else 0


def amp(got_path, ref_path, amp_path, prefix, unit):
    got, ref, errs = read(got_path), read(ref_path), read(amp_path)
    cmp = Comparer(ref)
    adam_sensitivity, adam_step = 1e-3 * 0.1 / 1e-6, 1e-3 * 0.1 / math.sqrt(0.001)
    worst, worst_name, bad = 0.0, "", []
    for name, e in ref.items():
        if not is_float(e) or name == "lr":
            continue
        a = got[name]
        amp_err = values(errs[f"{prefix}/{name}"])[0]
        err = cmp.error(name, a, e)
        bound = max(2 * amp_err, unit)
        if name.startswith("param."):
            g = "grad." + name[len("param."):]
            if cmp.roundoff(g):
                moved = max(abs(x - y) for x, y in zip(values(a), values(e)))
                if moved > adam_step * 1.01:
                    bad.append(f"{name} moved {moved:.2e}")
                continue
            bound += adam_sensitivity * diff_norm(values(got[g]), values(ref[g])) / norm(values(e))
        if err / bound > worst:
            worst, worst_name = err / bound, f"{name} {err:.2e} (autocast {amp_err:.2e})"
        if err > bound:
            bad.append(f"{name} {err:.2e} > {bound:.2e}")
    status = "FAIL" if bad else "ok"
    print(f"{status}: closest {worst:.2f} of the bound: {worst_name}; over: {bad[:4]}")
    return 1 if bad else 0


def last_ckpt(d):
    best, best_step = None, -1
    for root, _, files in os.walk(d):
        for f in files:
            # tiny_bert_<k>_<step>.safetensors (not the .state.safetensors beside it)
            m = re.fullmatch(r"tiny_bert_\d+_(\d+)\.safetensors", f)
            if m and int(m.group(1)) > best_step:
                best, best_step = os.path.join(root, f), int(m.group(1))
    print(best or "")
    return 0 if best else 1


def main(argv):
    cmd = argv[1]
    if cmd == "same":
        return same(argv[2], argv[3])
    if cmd == "close":
        return close(argv[2], argv[3], float(argv[4]))
    if cmd == "amp":
        return amp(argv[2], argv[3], argv[4], argv[5], float(argv[6]))
    if cmd == "last-ckpt":
        return last_ckpt(argv[2])
    raise SystemExit(__doc__)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
