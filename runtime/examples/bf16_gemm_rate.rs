//! GEMM rates of the host's bf16 kernels against its f32 GEMM at the td1 shapes (M = batch 32 ×
//! seq 64), for BENCHMARKS.md: median GFLOP/s of 7 timed calls after 2 warm-ups, on the threads
//! of `RAYON_NUM_THREADS`. Usage: `cargo run --release -p runtime --example bf16_gemm_rate`.

use runtime::exec::bf16::{self, cpu_has_avx512_bf16, round_bf16, Bf16Kernel};
use std::time::Instant;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn rate(flop: f64, mut f: impl FnMut()) -> f64 {
    f();
    f();
    let t: Vec<f64> = (0..7)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64()
        })
        .collect();
    flop / median(t) / 1e9
}

fn main() {
    let threads = rayon::current_num_threads();
    println!(
        "threads {threads}, AVX512-BF16 {}; GFLOP/s (median of 7)",
        cpu_has_avx512_bf16()
    );
    println!("| shape (batch×m×n×k, op) | f32 (gemm crate) | bf16 widen | bf16 vdpbf16ps |");
    println!("|---|---|---|---|");
    // (batch, m, n, k, transpose b): teacher FFN up/down, QKV/output, student FFN, attention.
    let shapes = [
        (1, 2048, 3072, 768, true),
        (1, 2048, 768, 3072, true),
        (1, 2048, 768, 768, true),
        (1, 768, 3072, 2048, false),
        (1, 2048, 1200, 312, true),
        (384, 64, 64, 64, true),
    ];
    for (batch, m, n, k, tb) in shapes {
        let a32: Vec<f32> = (0..batch * m * k)
            .map(|i| ((i % 97) as f32 - 48.0) / 50.0)
            .collect();
        let b32: Vec<f32> = (0..batch * k * n)
            .map(|i| ((i % 89) as f32 - 44.0) / 50.0)
            .collect();
        let c32 = vec![0f32; batch * m * n];
        let a16: Vec<u16> = a32.iter().map(|&x| round_bf16(x)).collect();
        let b16: Vec<u16> = b32.iter().map(|&x| round_bf16(x)).collect();
        let mut c16 = vec![0u16; batch * m * n];
        let flop = 2.0 * (batch * m * n * k) as f64;
        let par = if m * n * k >= 1 << 21 {
            gemm::Parallelism::Rayon(threads)
        } else {
            gemm::Parallelism::None
        };
        let (b_cs, b_rs) = if tb { (k as isize, 1) } else { (1, n as isize) };
        let f32_rate = rate(flop, || {
            let one = |i: usize| unsafe {
                let c = c32.as_ptr().add(i * m * n) as *mut f32;
                gemm::gemm(
                    m,
                    n,
                    k,
                    c,
                    1,
                    n as isize,
                    false,
                    a32.as_ptr().add(i * m * k),
                    1,
                    k as isize,
                    b32.as_ptr().add(i * k * n),
                    b_cs,
                    b_rs,
                    0.0,
                    1.0,
                    false,
                    false,
                    false,
                    par,
                )
            };
            if batch > 1 {
                use rayon::prelude::*;
                (0..batch).into_par_iter().for_each(one);
            } else {
                one(0);
            }
        });
        let mut bf16_rate = |kernel| {
            rate(flop, || unsafe {
                bf16::gemm(
                    kernel,
                    a16.as_ptr(),
                    b16.as_ptr(),
                    c16.as_mut_ptr(),
                    false,
                    tb,
                    batch,
                    m,
                    n,
                    k,
                )
            })
        };
        let widen = bf16_rate(Bf16Kernel::Widen);
        let dot = if cpu_has_avx512_bf16() {
            format!("{:.0}", bf16_rate(Bf16Kernel::Dot))
        } else {
            "—".into()
        };
        let op = if tb { "A·Bᵀ" } else { "A·B" };
        println!("| {batch}×{m}×{n}×{k} {op} | {f32_rate:.0} | {widen:.0} | {dot} |");
    }
}
