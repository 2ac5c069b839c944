"""PyTorch fp32 GEMM baseline; prints RESULT lines in the same format as gemm-bench.
usage: python torch_bench.py <threads> [reps]"""
import sys, time, statistics, torch
threads = int(sys.argv[1]); reps = int(sys.argv[2]) if len(sys.argv) > 2 else 9
torch.set_num_threads(threads)
print(f"torch {torch.__version__} threads={torch.get_num_threads()} cpu_capability={torch.backends.cpu.get_cpu_capability()}", file=sys.stderr)
g = torch.Generator().manual_seed(0)
probs = [("T:2048x768x3072",1,2048,768,3072),("T:2048x3072x768",1,2048,3072,768),("T:2048x768x768",1,2048,768,768),
         ("S:2048x312x1200",1,2048,312,1200),("S:2048x1200x312",1,2048,1200,312),("S:2048x312x312",1,2048,312,312),
         ("B:384x64x64x64",384,64,64,64)]
with torch.no_grad():
    for name, bt, m, k, n in probs:
        flops = 2.0 * bt * m * n * k
        for tb in (False, True):
            if bt == 1:
                a = torch.rand(m, k, generator=g) * 2 - 1
                b = torch.rand(n, k, generator=g) * 2 - 1 if tb else torch.rand(k, n, generator=g) * 2 - 1
                bb = b.t() if tb else b
                c = torch.empty(m, n)
                f = lambda: torch.mm(a, bb, out=c)
                ref = lambda: a.double() @ bb.double()
            else:
                a = torch.rand(bt, m, k, generator=g) * 2 - 1
                b = torch.rand(bt, n, k, generator=g) * 2 - 1 if tb else torch.rand(bt, k, n, generator=g) * 2 - 1
                bb = b.transpose(1, 2) if tb else b
                c = torch.empty(bt, m, n)
                f = lambda: torch.bmm(a, bb, out=c)
                ref = lambda: torch.bmm(a.double(), bb.double())
            t1 = 1e9
            for _ in range(3):
                t = time.perf_counter(); f(); t1 = min(t1, time.perf_counter() - t)
            iters = max(1, int(0.12 / t1 + 0.999))
            gs = []
            for _ in range(reps):
                t = time.perf_counter()
                for _ in range(iters): f()
                gs.append(flops * iters / (time.perf_counter() - t) / 1e9)
            gs.sort()
            f(); c1 = c.clone(); f(); det = "det" if torch.equal(c1, c) else "NONDET"
            err = ((c1.double() - ref()).abs().max() / ref().abs().max()).item()
            op = "A*B^T" if tb else "A*B"; mode = "-" if bt == 1 else "loop"
            print(f"RESULT,torch,{threads},{name},{op},{mode},{statistics.median(gs):.1f},{gs[0]:.1f},{gs[-1]:.1f},{det},{err:.1e},-", flush=True)
