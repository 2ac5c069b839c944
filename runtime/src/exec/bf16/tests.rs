//! Both kernels against a float64 reference on bf16 operands: every element within one bf16
//! rounding of the exact product plus the f32 summation error bound (k·2⁻²⁴·Σ|a·b|).

use super::*;

/// Deterministic bf16 values in about ±4 (a small LCG; no denormals, as in training).
fn values(n: usize, seed: u64) -> Vec<u16> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let u = ((x >> 33) as f64 / (1u64 << 31) as f64) * 8.0 - 4.0;
            round_bf16(u as f32)
        })
        .collect()
}

fn check(kernel: Bf16Kernel, ta: bool, tb: bool, batch: usize, m: usize, n: usize, k: usize) {
    let a = values(batch * m * k, 1 + m as u64);
    let b = values(batch * k * n, 7 + n as u64);
    let mut c = vec![0u16; batch * m * n];
    // SAFETY: the buffers hold the blocks of these shapes.
    unsafe {
        gemm(
            kernel,
            a.as_ptr(),
            b.as_ptr(),
            c.as_mut_ptr(),
            ta,
            tb,
            batch,
            m,
            n,
            k,
        )
    };
    let s = Shape {
        ta,
        tb,
        batch,
        m,
        n,
        k,
    };
    let ((ars, acs), (brs, bcs)) = s.strides();
    for i in 0..batch {
        for r in 0..m {
            for j in 0..n {
                let (mut exact, mut mag) = (0f64, 0f64);
                for p in 0..k {
                    let x = widen_bf16(a[i * m * k + r * ars + p * acs]) as f64;
                    let y = widen_bf16(b[i * k * n + p * brs + j * bcs]) as f64;
                    exact += x * y;
                    mag += (x * y).abs();
                }
                let got = widen_bf16(c[i * m * n + r * n + j]) as f64;
                let bound = exact.abs() * 2f64.powi(-8) + mag * k as f64 * 2f64.powi(-24);
                let err = (got - exact).abs();
                assert!(
                    err <= bound + 1e-30,
                    "{kernel:?} ta={ta} tb={tb} {batch}x{m}x{n}x{k} at [{i},{r},{j}]: {got} vs {exact} (bound {bound:.3e})"
                );
            }
        }
    }
}

fn kernels() -> Vec<Bf16Kernel> {
    if cpu_has_avx512_bf16() {
        vec![Bf16Kernel::Dot, Bf16Kernel::Widen]
    } else {
        println!("SKIPPED: the Dot kernel (this CPU has no AVX512-BF16); Widen is tested");
        vec![Bf16Kernel::Widen]
    }
}

#[test]
fn small_and_edge_shapes_match_the_float64_product() {
    for kernel in kernels() {
        for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
            // Edges of every block size: MR 12, NR 32, odd k, k across a 512 block.
            for &(m, n, k) in &[
                (1, 1, 1),
                (13, 37, 21),
                (12, 32, 2),
                (25, 65, 515),
                (7, 3, 1),
            ] {
                check(kernel, ta, tb, 1, m, n, k);
            }
            check(kernel, ta, tb, 5, 9, 11, 17);
        }
    }
}

#[test]
fn large_threaded_shapes_match_the_float64_product() {
    for kernel in kernels() {
        // Threaded over row blocks, two column blocks of 2048, two k blocks.
        check(kernel, false, false, 1, 200, 2100, 600);
        check(kernel, true, false, 1, 130, 300, 1030);
    }
}

/// The AVX-512 rounding the packed kernel stores with equals the `half` crate's (the
/// interpreter's): ties to even, NaN quiet, infinities, denormals, signed zero.
#[test]
#[cfg(target_arch = "x86_64")]
fn vector_rounding_is_round_to_nearest_even_with_quiet_nans() {
    if !is_x86_feature_detected!("avx512f") {
        println!("SKIPPED: the AVX-512 rounding (this CPU has no AVX-512F)");
        return;
    }
    let x = [
        1.0f32,
        // Ties: halfway between bf16 neighbours, to the even one.
        1.0 + 1.0 / 256.0,
        1.0 + 3.0 / 256.0,
        -3.3,
        1e-40,
        f32::MAX,
        f32::INFINITY,
        -0.0,
        f32::from_bits(0x7F80_0001),
        f32::from_bits(0xFFC0_1234),
        -1.0 - 3.0 / 256.0,
        65504.0,
        1e-45,
        -f32::INFINITY,
        3.0e38,
        0.1,
    ];
    // SAFETY: AVX-512F checked above.
    let got = unsafe { packed::round16_of(x) };
    for (x, g) in x.iter().zip(got) {
        assert_eq!(g, round_bf16(*x), "{x}");
    }
}

#[test]
fn the_kernel_follows_the_cpu_and_the_variable() {
    use Bf16Kernel::*;
    let k = |has, amd, var| choose(has, amd, var).map(|c| c.kernel);
    assert_eq!(k(false, true, None), Ok(Widen));
    assert_eq!(k(true, true, None), Ok(Dot));
    assert_eq!(k(true, false, None), Ok(Widen));
    assert_eq!(k(true, false, Some("dot")), Ok(Dot));
    assert_eq!(k(true, true, Some("widen")), Ok(Widen));
    assert_eq!(k(false, true, Some("dot")), Ok(Widen));
    let why = choose(false, false, None).unwrap().why;
    assert!(why.contains("no AVX512-BF16"), "{why}");
    let err = choose(true, true, Some("amx")).unwrap_err();
    assert!(
        err.contains("TBC_BF16_GEMM=amx") && err.contains("widen"),
        "{err}"
    );
}
