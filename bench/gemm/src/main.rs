//! CPU fp32 GEMM benchmark for tbc: gemm crate, matrixmultiply, OpenBLAS, BLIS, oneDNN.
//!
//! usage: gemm-bench <backend> <threads> [reps] [shape-filter]
//!   backend: gemm | mm | openblas | blis | dnnl
//! Prints one `RESULT,...` CSV line per (shape, op, mode). One process per
//! (backend, threads) so that library thread pools never compete with each other.
//!
//! The C libraries are loaded with dlopen (RTLD_LOCAL) so OpenBLAS and BLIS, which
//! both export `cblas_sgemm`, never clash in the one binary.

use std::ffi::{c_char, c_int, CStr};
use std::time::Instant;

// ---------------------------------------------------------------------------
// backends

type CblasSgemm = unsafe extern "C" fn(
    c_int, c_int, c_int, c_int, c_int, c_int, f32, *const f32, c_int, *const f32, c_int, f32,
    *mut f32, c_int,
);
type DnnlSgemm = unsafe extern "C" fn(
    c_char, c_char, i64, i64, i64, f32, *const f32, i64, *const f32, i64, f32, *mut f32, i64,
) -> c_int;

const CBLAS_ROW_MAJOR: c_int = 101;
const CBLAS_NO_TRANS: c_int = 111;
const CBLAS_TRANS: c_int = 112;

enum Backend {
    Gemm,
    MatrixMultiply,
    Cblas {
        _lib: libloading::Library,
        sgemm: CblasSgemm,
        set_threads: Box<dyn Fn(usize) + Sync>,
    },
    Dnnl {
        _lib: libloading::Library,
        _gomp: libloading::Library,
        sgemm: DnnlSgemm,
        omp_set_num_threads: unsafe extern "C" fn(c_int),
    },
}

unsafe impl Sync for Backend {}

impl Backend {
    fn load(name: &str, threads: usize) -> Backend {
        unsafe {
            match name {
                "gemm" => {
                    rayon::ThreadPoolBuilder::new().num_threads(threads).build_global().unwrap();
                    eprintln!(
                        "gemm crate 0.19, x86-v4 (AVX-512) feature: {}",
                        cfg!(feature = "x86-v4")
                    );
                    Backend::Gemm
                }
                "mm" => {
                    // read once by matrixmultiply (lazy), must be set before first call
                    std::env::set_var("MATMUL_NUM_THREADS", threads.to_string());
                    Backend::MatrixMultiply
                }
                "openblas" => {
                    let path = "/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0";
                    let lib = libloading::Library::new(path).expect(path);
                    let sgemm = *lib.get::<CblasSgemm>(b"cblas_sgemm\0").unwrap();
                    let set: unsafe extern "C" fn(c_int) =
                        *lib.get(b"openblas_set_num_threads\0").unwrap();
                    let cfg: unsafe extern "C" fn() -> *const c_char =
                        *lib.get(b"openblas_get_config\0").unwrap();
                    let core: unsafe extern "C" fn() -> *const c_char =
                        *lib.get(b"openblas_get_corename\0").unwrap();
                    let par: unsafe extern "C" fn() -> c_int =
                        *lib.get(b"openblas_get_parallel\0").unwrap();
                    set(threads as c_int);
                    let getn: unsafe extern "C" fn() -> c_int =
                        *lib.get(b"openblas_get_num_threads\0").unwrap();
                    eprintln!(
                        "openblas config: {} | corename: {} | parallel: {} | num_threads: {}",
                        CStr::from_ptr(cfg()).to_string_lossy(),
                        CStr::from_ptr(core()).to_string_lossy(),
                        par(),
                        getn()
                    );
                    Backend::Cblas {
                        _lib: lib,
                        sgemm,
                        set_threads: Box::new(move |n| set(n as c_int)),
                    }
                }
                "blis" => {
                    let path = "/usr/lib/x86_64-linux-gnu/blis-pthread/libblis.so.4";
                    let lib = libloading::Library::new(path).expect(path);
                    let sgemm = *lib.get::<CblasSgemm>(b"cblas_sgemm\0").unwrap();
                    let set: unsafe extern "C" fn(i64) =
                        *lib.get(b"bli_thread_set_num_threads\0").unwrap();
                    let arch_id: unsafe extern "C" fn() -> c_int =
                        *lib.get(b"bli_arch_query_id\0").unwrap();
                    let arch_str: unsafe extern "C" fn(c_int) -> *const c_char =
                        *lib.get(b"bli_arch_string\0").unwrap();
                    let ver: unsafe extern "C" fn() -> *const c_char =
                        *lib.get(b"bli_info_get_version_str\0").unwrap();
                    set(threads as i64);
                    eprintln!(
                        "blis version {} | arch: {}",
                        CStr::from_ptr(ver()).to_string_lossy(),
                        CStr::from_ptr(arch_str(arch_id())).to_string_lossy()
                    );
                    Backend::Cblas {
                        _lib: lib,
                        sgemm,
                        set_threads: Box::new(move |n| set(n as i64)),
                    }
                }
                "dnnl" => {
                    let gomp = libloading::Library::new("libgomp.so.1").unwrap();
                    let omp_set_num_threads: unsafe extern "C" fn(c_int) =
                        *gomp.get(b"omp_set_num_threads\0").unwrap();
                    omp_set_num_threads(threads as c_int);
                    let lib = libloading::Library::new("libdnnl.so.2").unwrap();
                    let sgemm = *lib.get::<DnnlSgemm>(b"dnnl_sgemm\0").unwrap();
                    #[repr(C)]
                    struct DnnlVersion {
                        major: c_int,
                        minor: c_int,
                        patch: c_int,
                        hash: *const c_char,
                        cpu_runtime: u32,
                        gpu_runtime: u32,
                    }
                    let ver: unsafe extern "C" fn() -> *const DnnlVersion =
                        *lib.get(b"dnnl_version\0").unwrap();
                    let v = &*ver();
                    eprintln!(
                        "dnnl version {}.{}.{} cpu_runtime={} (DNNL_CPU_ISA env may override ISA)",
                        v.major, v.minor, v.patch, v.cpu_runtime
                    );
                    Backend::Dnnl { _lib: lib, _gomp: gomp, sgemm, omp_set_num_threads }
                }
                _ => panic!("unknown backend {name}"),
            }
        }
    }

    /// Make the *calling thread's* library calls use `n` threads (used for the
    /// outer-parallel batched mode: each worker sets 1).
    fn set_threads_here(&self, n: usize) {
        match self {
            Backend::Cblas { set_threads, .. } => set_threads(n),
            Backend::Dnnl { omp_set_num_threads, .. } => unsafe { omp_set_num_threads(n as c_int) },
            _ => {}
        }
    }

    /// Row-major C[m,n] = A[m,k] * B  where B is [k,n] (tb=false) or [n,k] (tb=true, A*B^T).
    /// `par`: threads the library may use in this call (for gemm crate).
    #[allow(clippy::too_many_arguments)]
    fn sgemm(&self, tb: bool, m: usize, n: usize, k: usize, a: &[f32], b: &[f32], c: &mut [f32], par: usize) {
        assert!(a.len() >= m * k && b.len() >= k * n && c.len() >= m * n);
        unsafe {
            match self {
                Backend::Gemm => {
                    let (rhs_cs, rhs_rs) = if tb { (k as isize, 1) } else { (1, n as isize) };
                    let p = if par > 1 { gemm::Parallelism::Rayon(par) } else { gemm::Parallelism::None };
                    gemm::gemm(
                        m, n, k, c.as_mut_ptr(), 1, n as isize, false, a.as_ptr(), 1, k as isize,
                        b.as_ptr(), rhs_cs, rhs_rs, 0.0f32, 1.0f32, false, false, false, p,
                    );
                }
                Backend::MatrixMultiply => {
                    let (rsb, csb) = if tb { (1, k as isize) } else { (n as isize, 1) };
                    matrixmultiply::sgemm(
                        m, k, n, 1.0, a.as_ptr(), k as isize, 1, b.as_ptr(), rsb, csb, 0.0,
                        c.as_mut_ptr(), n as isize, 1,
                    );
                }
                Backend::Cblas { sgemm, .. } => {
                    let (tr, ldb) = if tb { (CBLAS_TRANS, k) } else { (CBLAS_NO_TRANS, n) };
                    sgemm(
                        CBLAS_ROW_MAJOR, CBLAS_NO_TRANS, tr, m as c_int, n as c_int, k as c_int, 1.0,
                        a.as_ptr(), k as c_int, b.as_ptr(), ldb as c_int, 0.0, c.as_mut_ptr(), n as c_int,
                    );
                }
                Backend::Dnnl { sgemm, .. } => {
                    let (tr, ldb) = if tb { (b'T', k) } else { (b'N', n) };
                    let st = sgemm(
                        b'N' as c_char, tr as c_char, m as i64, n as i64, k as i64, 1.0, a.as_ptr(),
                        k as i64, b.as_ptr(), ldb as i64, 0.0, c.as_mut_ptr(), n as i64,
                    );
                    assert_eq!(st, 0, "dnnl_sgemm failed");
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// problems

#[derive(Clone, Copy)]
struct Prob {
    name: &'static str,
    batch: usize,
    m: usize,
    k: usize,
    n: usize,
}

struct Data {
    a: Vec<f32>,
    b: Vec<f32>,
    c: Vec<f32>,
}

fn rng_fill(v: &mut [f32], seed: u64) {
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    for x in v {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        *x = ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0;
    }
}

/// Run the whole (possibly batched) problem once.
fn run_once(be: &Backend, p: &Prob, tb: bool, d: &mut Data, threads: usize, outer: bool) {
    let (m, k, n) = (p.m, p.k, p.n);
    let (sa, sb, sc) = (m * k, k * n, m * n);
    if p.batch == 1 {
        be.sgemm(tb, m, n, k, &d.a, &d.b, &mut d.c, threads);
    } else if !outer || threads == 1 {
        for i in 0..p.batch {
            be.sgemm(tb, m, n, k, &d.a[i * sa..], &d.b[i * sb..], &mut d.c[i * sc..(i + 1) * sc], threads);
        }
    } else {
        // outer-parallel: split the batch over `threads` OS threads, library at 1 thread each
        let per = p.batch.div_ceil(threads);
        let (a, b) = (&d.a, &d.b);
        std::thread::scope(|s| {
            for (t, cchunk) in d.c.chunks_mut(per * sc).enumerate() {
                s.spawn(move || {
                    be.set_threads_here(1);
                    for (j, cc) in cchunk.chunks_mut(sc).enumerate() {
                        let i = t * per + j;
                        be.sgemm(tb, m, n, k, &a[i * sa..], &b[i * sb..], cc, 1);
                    }
                });
            }
        });
    }
}

/// Check sampled entries of C against an f64 reference. Returns max of |err| / (sum|a||b|).
fn check(p: &Prob, tb: bool, d: &Data) -> f64 {
    let (m, k, n) = (p.m, p.k, p.n);
    let mut worst = 0.0f64;
    let mut s = 12345u64;
    let samples = if m * n * p.batch <= 4096 { m * n * p.batch } else { 200 };
    for idx in 0..samples {
        let (bi, i, j) = if samples == m * n * p.batch {
            (idx / (m * n), (idx / n) % m, idx % n)
        } else {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1);
            let r = (s >> 33) as usize;
            (r % p.batch, (r / 7) % m, (r / 13) % n)
        };
        let a = &d.a[bi * m * k..];
        let b = &d.b[bi * k * n..];
        let (mut acc, mut mag) = (0.0f64, 0.0f64);
        for l in 0..k {
            let av = a[i * k + l] as f64;
            let bv = if tb { b[j * k + l] } else { b[l * n + j] } as f64;
            acc += av * bv;
            mag += (av * bv).abs();
        }
        let got = d.c[bi * m * n + i * n + j] as f64;
        let e = if got.is_finite() { (got - acc).abs() / (mag + 1e-30) } else { f64::INFINITY };
        worst = worst.max(e);
    }
    worst
}

fn hash(c: &[f32]) -> u64 {
    let mut h = 0xcbf29ce484222325u64;
    for x in c {
        h ^= x.to_bits() as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let backend = args.get(1).expect("backend").clone();
    let threads: usize = args.get(2).map(|s| s.parse().unwrap()).unwrap_or(1);
    let reps: usize = args.get(3).map(|s| s.parse().unwrap()).unwrap_or(9);
    // optional 4th arg: only run shapes whose name contains this substring
    let filter: String = args.get(4).cloned().unwrap_or_default();
    let be = Backend::load(&backend, threads);

    // --- correctness on small odd shapes (full comparison)
    for &(m, k, n) in &[(1, 1, 1), (7, 5, 3), (67, 45, 53), (130, 257, 129)] {
        for tb in [false, true] {
            let p = Prob { name: "small", batch: 1, m, k, n };
            let mut d = Data { a: vec![0.0; m * k], b: vec![0.0; k * n], c: vec![f32::NAN; m * n] };
            rng_fill(&mut d.a, 1);
            rng_fill(&mut d.b, 2);
            run_once(&be, &p, tb, &mut d, threads, false);
            let e = check(&p, tb, &d);
            assert!(e < 1e-5, "{backend}: WRONG result on small {m}x{k}x{n} tb={tb}: rel err {e}");
        }
    }
    eprintln!("{backend}: small-shape correctness OK (C pre-filled with NaN, beta=0)");

    let probs = [
        Prob { name: "T:2048x768x3072", batch: 1, m: 2048, k: 768, n: 3072 },
        Prob { name: "T:2048x3072x768", batch: 1, m: 2048, k: 3072, n: 768 },
        Prob { name: "T:2048x768x768", batch: 1, m: 2048, k: 768, n: 768 },
        Prob { name: "S:2048x312x1200", batch: 1, m: 2048, k: 312, n: 1200 },
        Prob { name: "S:2048x1200x312", batch: 1, m: 2048, k: 1200, n: 312 },
        Prob { name: "S:2048x312x312", batch: 1, m: 2048, k: 312, n: 312 },
        Prob { name: "B:384x64x64x64", batch: 384, m: 64, k: 64, n: 64 },
    ];
    for p in probs.iter().filter(|p| p.name.contains(filter.as_str())) {
        let mut d = Data {
            a: vec![0.0; p.batch * p.m * p.k],
            b: vec![0.0; p.batch * p.k * p.n],
            c: vec![0.0; p.batch * p.m * p.n],
        };
        rng_fill(&mut d.a, 3);
        rng_fill(&mut d.b, 4);
        let flops = 2.0 * (p.batch * p.m * p.n * p.k) as f64;
        for tb in [false, true] {
            let modes: &[bool] = if p.batch > 1 && threads > 1 { &[false, true] } else { &[false] };
            for &outer in modes {
                // warm-up + calibration
                let mut t1 = f64::MAX;
                for _ in 0..3 {
                    let t = Instant::now();
                    run_once(&be, p, tb, &mut d, threads, outer);
                    t1 = t1.min(t.elapsed().as_secs_f64());
                }
                let iters = ((0.12 / t1).ceil() as usize).max(1);
                let mut g = Vec::with_capacity(reps);
                for _ in 0..reps {
                    let t = Instant::now();
                    for _ in 0..iters {
                        run_once(&be, p, tb, &mut d, threads, outer);
                    }
                    g.push(flops * iters as f64 / t.elapsed().as_secs_f64() / 1e9);
                }
                g.sort_by(|x, y| x.partial_cmp(y).unwrap());
                // correctness on the full-size result (sampled) + determinism
                d.c.fill(f32::NAN);
                run_once(&be, p, tb, &mut d, threads, outer);
                let err = check(p, tb, &d);
                assert!(err < 1e-5, "{backend}: WRONG result {} tb={tb}: rel err {err}", p.name);
                let h1 = hash(&d.c);
                d.c.fill(f32::NAN);
                run_once(&be, p, tb, &mut d, threads, outer);
                let h2 = hash(&d.c);
                let op = if tb { "A*B^T" } else { "A*B" };
                let mode = if p.batch == 1 { "-" } else if outer { "outer" } else { "loop" };
                println!(
                    "RESULT,{backend},{threads},{},{op},{mode},{:.1},{:.1},{:.1},{},{:.1e},{:016x}",
                    p.name,
                    g[g.len() / 2],
                    g[0],
                    g[g.len() - 1],
                    if h1 == h2 { "det" } else { "NONDET" },
                    err,
                    h1
                );
            }
        }
    }
}
