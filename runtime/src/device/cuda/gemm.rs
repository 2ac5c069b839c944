//! A plan's GEMM step on cuBLASLt, set up once when the plan is loaded (descriptor, layouts,
//! the heuristic's algorithm) and run per step.
//!
//! cuBLAS is column-major; a row-major `C[m×n] = op(A)·op(B)` is the column-major
//! `Cᵀ[n×m] = op(B)ᵀ·op(A)ᵀ`, so B is passed as cuBLAS's first operand and A as its second,
//! each with its stored shape read column-major. Compute type `CUBLAS_COMPUTE_32F` for every
//! precision: f32 GEMMs never use TF32 (cudarc's safe f32 matmul would), and f16/bf16 GEMMs
//! accumulate in f32 and write f16/bf16 (the mixed-precision pass's contract).

use cudarc::cublaslt::{result as lt, sys as lts};
use plan::exec::GemmPrecision;
use plan::ElemType;
use std::ffi::c_void;

/// Bytes of the workspace cuBLASLt may use per GEMM.
pub const WORKSPACE_BYTES: usize = 32 << 20;

/// The column-major cuBLAS call that computes a row-major plan GEMM: its first operand is the
/// plan's B, its second the plan's A, each read column-major in its stored shape (leading
/// dimension = rows, batches contiguous), and the result `Cᵀ` is `n × m` column-major, i.e. C
/// row-major.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ColumnMajorCall {
    pub transpose_a: bool,
    pub transpose_b: bool,
    /// (rows, cols) of cuBLAS's A, B and C = D layouts.
    pub dims: [(usize, usize); 3],
}

impl ColumnMajorCall {
    pub fn of(shape: &GemmShape) -> ColumnMajorCall {
        let (m, n, k) = (shape.m, shape.n, shape.k);
        ColumnMajorCall {
            transpose_a: shape.transpose_b,
            transpose_b: shape.transpose_a,
            dims: [
                // The plan's B stored [k×n] row-major is n×k column-major (op N); stored [n×k]
                // (transposed) it is k×n (op T).
                if shape.transpose_b { (k, n) } else { (n, k) },
                // The plan's A stored [m×k] row-major is k×m column-major; stored [k×m], m×k.
                if shape.transpose_a { (m, k) } else { (k, m) },
                (n, m),
            ],
        }
    }
}

/// A GEMM step ready to run.
pub struct PreparedGemm {
    desc: lts::cublasLtMatmulDesc_t,
    /// cuBLAS's A (the plan's B), B (the plan's A) and C = D layouts.
    layouts: [lts::cublasLtMatrixLayout_t; 3],
    algo: lts::cublasLtMatmulAlgo_t,
}

/// The shape of a plan GEMM.
pub struct GemmShape {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub batch: usize,
    pub transpose_a: bool,
    pub transpose_b: bool,
}

fn data_type(e: ElemType) -> Result<lts::cudaDataType, String> {
    Ok(match e {
        ElemType::F32 => lts::cudaDataType_t::CUDA_R_32F,
        ElemType::F16 => lts::cudaDataType_t::CUDA_R_16F,
        ElemType::BF16 => lts::cudaDataType_t::CUDA_R_16BF,
        other => return Err(format!("cuBLASLt GEMMs take f32, f16 or bf16, not {other}")),
    })
}

fn lt_err(what: &str) -> impl Fn(lt::CublasError) -> String + '_ {
    move |e| format!("cuBLASLt {what}: {e:?}")
}

impl PreparedGemm {
    /// Creates the descriptors and picks the algorithm for `shape` in `precision`.
    ///
    /// # Safety
    /// `handle` must be a live cuBLASLt handle.
    pub unsafe fn new(
        handle: lts::cublasLtHandle_t,
        shape: &GemmShape,
        precision: GemmPrecision,
    ) -> Result<PreparedGemm, String> {
        if precision.accumulate != ElemType::F32 {
            return Err(format!(
                "cuBLASLt GEMMs accumulate in f32, the plan asks for {}",
                precision.accumulate
            ));
        }
        let ty = data_type(precision.input)?;
        let desc = lt::create_matmul_desc(
            lts::cublasComputeType_t::CUBLAS_COMPUTE_32F,
            lts::cudaDataType_t::CUDA_R_32F,
        )
        .map_err(lt_err("matmul descriptor"))?;
        let call = ColumnMajorCall::of(shape);
        let (ta, tb) = (call.transpose_a as i32, call.transpose_b as i32);
        // SAFETY: the descriptor was just created; the attribute buffers are i32 as documented.
        unsafe {
            lt::set_matmul_desc_attribute(
                desc,
                lts::cublasLtMatmulDescAttributes_t::CUBLASLT_MATMUL_DESC_TRANSA,
                &ta as *const i32 as *const c_void,
                4,
            )
            .map_err(lt_err("TRANSA"))?;
            lt::set_matmul_desc_attribute(
                desc,
                lts::cublasLtMatmulDescAttributes_t::CUBLASLT_MATMUL_DESC_TRANSB,
                &tb as *const i32 as *const c_void,
                4,
            )
            .map_err(lt_err("TRANSB"))?;
        }
        let dims = call.dims.map(|(r, c)| (r as u64, c as u64));
        let mut layouts = [std::ptr::null_mut(); 3];
        for (l, (r, c)) in layouts.iter_mut().zip(dims) {
            *l = lt::create_matrix_layout(ty, r, c, r as i64).map_err(lt_err("matrix layout"))?;
            if shape.batch > 1 {
                let count = shape.batch as i32;
                let stride = (r * c) as i64;
                // SAFETY: layout just created; attribute types per the cuBLASLt docs.
                unsafe {
                    lt::set_matrix_layout_attribute(
                        *l,
                        lts::cublasLtMatrixLayoutAttribute_t::CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT,
                        &count as *const i32 as *const c_void,
                        4,
                    )
                    .map_err(lt_err("batch count"))?;
                    lt::set_matrix_layout_attribute(
                        *l,
                        lts::cublasLtMatrixLayoutAttribute_t::CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET,
                        &stride as *const i64 as *const c_void,
                        8,
                    )
                    .map_err(lt_err("batch stride"))?;
                }
            }
        }
        let pref = lt::create_matmul_pref().map_err(lt_err("preference"))?;
        let ws = WORKSPACE_BYTES;
        // SAFETY: all objects created above and alive; the heuristic only reads them.
        let heuristic = unsafe {
            lt::set_matmul_pref_attribute(
                pref,
                lts::cublasLtMatmulPreferenceAttributes_t::CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                &ws as *const usize as *const c_void,
                8,
            )
            .map_err(lt_err("workspace preference"))?;
            let h = lt::get_matmul_algo_heuristic(
                handle, desc, layouts[0], layouts[1], layouts[2], layouts[2], pref,
            );
            let _ = lt::destroy_matmul_pref(pref);
            h.map_err(lt_err("algorithm heuristic"))?
        };
        Ok(PreparedGemm {
            desc,
            layouts,
            algo: heuristic.algo,
        })
    }

    /// Enqueues `c = a·b` on `stream` (device pointers).
    ///
    /// # Safety
    /// `a`, `b`, `c` and `workspace` must be live device buffers of the prepared shape, type and
    /// [`WORKSPACE_BYTES`]; `handle` the handle this GEMM was prepared with.
    pub unsafe fn run(
        &self,
        handle: lts::cublasLtHandle_t,
        a: u64,
        b: u64,
        c: u64,
        workspace: u64,
        stream: lts::cudaStream_t,
    ) -> Result<(), String> {
        let (alpha, beta) = (1.0f32, 0.0f32);
        lt::matmul(
            handle,
            self.desc,
            &alpha as *const f32 as *const c_void,
            &beta as *const f32 as *const c_void,
            b as *const c_void,
            self.layouts[0],
            a as *const c_void,
            self.layouts[1],
            c as *const c_void,
            self.layouts[2],
            c as *mut c_void,
            self.layouts[2],
            &self.algo,
            workspace as *mut c_void,
            WORKSPACE_BYTES,
            stream,
        )
        .map_err(lt_err("matmul"))
    }
}

impl Drop for PreparedGemm {
    fn drop(&mut self) {
        // SAFETY: created in `new`, destroyed once here.
        unsafe {
            for l in self.layouts {
                let _ = lt::destroy_matrix_layout(l);
            }
            let _ = lt::destroy_matmul_desc(self.desc);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// cuBLAS's definition, column-major: `D[i, j] = Σ_l op(A)[i, l] · op(B)[l, j]` per batch,
    /// with `op(X)[i, l] = X[i + l·ld]` (N) or `X[l + i·ld]` (T), `ld` = the layout's rows.
    fn cublas_reference(call: &ColumnMajorCall, batch: usize, a: &[f64], b: &[f64]) -> Vec<f64> {
        let [(ar, ac), (br, bc), (dr, dc)] = call.dims;
        let (m, k) = if call.transpose_a { (ac, ar) } else { (ar, ac) };
        let n = if call.transpose_b { br } else { bc };
        assert_eq!((dr, dc), (m, n));
        let mut d = vec![0.0; batch * m * n];
        for bi in 0..batch {
            let (a, b) = (&a[bi * ar * ac..], &b[bi * br * bc..]);
            for i in 0..m {
                for j in 0..n {
                    let mut s = 0.0;
                    for l in 0..k {
                        let x = if call.transpose_a {
                            a[l + i * ar]
                        } else {
                            a[i + l * ar]
                        };
                        let y = if call.transpose_b {
                            b[j + l * br]
                        } else {
                            b[l + j * br]
                        };
                        s += x * y;
                    }
                    d[bi * m * n + i + j * dr] = s;
                }
            }
        }
        d
    }

    /// The plan's definition, row-major: `C[b][i][j] = Σ_l op(A)[b][i][l] · op(B)[b][l][j]`.
    fn plan_reference(shape: &GemmShape, a: &[f64], b: &[f64]) -> Vec<f64> {
        let (m, n, k) = (shape.m, shape.n, shape.k);
        let mut c = vec![0.0; shape.batch * m * n];
        for bi in 0..shape.batch {
            for i in 0..m {
                for j in 0..n {
                    let mut s = 0.0;
                    for l in 0..k {
                        let x = if shape.transpose_a {
                            a[bi * m * k + l * m + i]
                        } else {
                            a[bi * m * k + i * k + l]
                        };
                        let y = if shape.transpose_b {
                            b[bi * k * n + j * k + l]
                        } else {
                            b[bi * k * n + l * n + j]
                        };
                        s += x * y;
                    }
                    c[bi * m * n + i * n + j] = s;
                }
            }
        }
        c
    }

    /// The operand swap and layouts give the plan's row-major product for every transpose
    /// combination and a batch (small integers: exact in f64).
    #[test]
    fn the_column_major_call_computes_the_row_major_plan_gemm() {
        for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
            let shape = GemmShape {
                m: 3,
                n: 5,
                k: 4,
                batch: 2,
                transpose_a: ta,
                transpose_b: tb,
            };
            let a: Vec<f64> = (0..2 * 3 * 4).map(|i| (i * 7 % 11) as f64 - 5.0).collect();
            let b: Vec<f64> = (0..2 * 4 * 5).map(|i| (i * 5 % 13) as f64 - 6.0).collect();
            let call = ColumnMajorCall::of(&shape);
            // cuBLAS's A is the plan's B and its B the plan's A.
            let d = cublas_reference(&call, shape.batch, &b, &a);
            assert_eq!(d, plan_reference(&shape, &a, &b), "transposes {ta} {tb}");
        }
    }
}
