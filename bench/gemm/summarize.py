"""usage: python3 summarize.py results/run1.csv [results/run2.csv ...]
Markdown table: median GFLOP/s per (shape, op, mode) x candidate x threads, ratio vs torch
(same run, same threads). With several runs, shows 'run1/run2' values."""
import sys, collections
runs = []
for f in sys.argv[1:]:
    d = {}
    for line in open(f):
        if not line.startswith("RESULT,"): continue
        _, lab, thr, shape, op, mode, med, mn, mx, det, err, h = line.strip().split(",")
        d[(lab, int(thr), shape, op, mode)] = (float(med), det)
    runs.append(d)
labels = list(dict.fromkeys(k[0] for d in runs for k in d))
rows = list(dict.fromkeys(k[2:] for d in runs for k in d))
for thr in (1, 2):
    print(f"\n### {thr} thread(s): median GFLOP/s (ratio vs torch)" + (" — runs separated by /" if len(runs) > 1 else ""))
    print("| shape | op | mode | " + " | ".join(labels) + " |")
    print("|---|---|---|" + "---|" * len(labels))
    for (shape, op, mode) in rows:
        if thr == 1 and mode == "outer": continue
        cells = []
        for lab in labels:
            vals = []
            for d in runs:
                v = d.get((lab, thr, shape, op, mode))
                if v is None: continue
                t = d.get(("torch", thr, shape, op, "loop" if mode == "outer" else mode))
                r = f" ({v[0]/t[0]:.2f})" if t and lab != "torch" else ""
                vals.append(f"{v[0]:.0f}{r}" + ("" if v[1] == "det" else "!ND"))
            cells.append(" / ".join(vals) if vals else "")
        print(f"| {shape} | {op} | {mode} | " + " | ".join(cells) + " |")
