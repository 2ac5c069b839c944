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
        let op = |t: bool| -> i32 { t as i32 };
        let (ta, tb) = (op(shape.transpose_b), op(shape.transpose_a));
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
        let (m, n, k) = (shape.m as u64, shape.n as u64, shape.k as u64);
        // cuBLAS A = the plan's B read column-major: [n×k] (N) or [k×n] (T).
        let (ar, ac) = if shape.transpose_b { (k, n) } else { (n, k) };
        // cuBLAS B = the plan's A: [k×m] (N) or [m×k] (T).
        let (br, bc) = if shape.transpose_a { (m, k) } else { (k, m) };
        let dims = [(ar, ac), (br, bc), (n, m)];
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
