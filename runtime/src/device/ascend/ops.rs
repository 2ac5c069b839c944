//! The plan's library steps through aclnn: GEMMs as `aclnnMatmul` (transposes as strided views,
//! a batch as a 3-D matmul, f32 operands kept in f32), gathers as `aclnnEmbedding`, and
//! scatter-adds as a zeroed output plus `aclnnIndexAdd` along rows. Every operator is
//! two-phase: `…GetWorkspaceSize` builds an executor over tensor descriptors, the operator
//! runs it on the stream with the workspace it asked for.

use super::acl::{self, Acl, Handle, RunOp};
use super::{err, AscendDevice};
use crate::device::DeviceError;
use plan::exec::{BufferRef, Step};
use plan::ElemType;
use std::ffi::c_void;

/// Descriptors made for enqueued operators, destroyed once the stream has run them.
#[derive(Default)]
pub(super) struct Pending {
    tensors: Vec<Handle>,
    scalars: Vec<Handle>,
}

impl Pending {
    pub(super) fn release(&mut self, acl: &Acl) {
        // SAFETY: each handle was created once by aclCreateTensor / aclCreateScalar.
        unsafe {
            for t in self.tensors.drain(..) {
                (acl.api.destroy_tensor)(t);
            }
            for s in self.scalars.drain(..) {
                (acl.api.destroy_scalar)(s);
            }
        }
    }
}

fn acl_type(e: ElemType) -> Result<i32, String> {
    Ok(match e {
        ElemType::F32 => acl::ACL_FLOAT,
        ElemType::F16 => acl::ACL_FLOAT16,
        ElemType::BF16 => acl::ACL_BF16,
        ElemType::I32 => acl::ACL_INT32,
        ElemType::I64 => acl::ACL_INT64,
        other => return Err(format!("aclnn steps take no {other} tensors")),
    })
}

/// One operator's descriptors and the device it runs on.
struct Op<'d> {
    device: &'d mut AscendDevice,
    pending: &'d mut Pending,
}

impl Op<'_> {
    fn fail(&self, m: impl std::fmt::Display) -> DeviceError {
        err(&self.device.rt.name, m)
    }

    /// A descriptor of `dims` with `strides` (elements) over the `storage` elements at `data`.
    fn tensor(
        &mut self,
        data: *mut u8,
        elem: ElemType,
        dims: &[i64],
        strides: &[i64],
        storage: i64,
    ) -> Result<Handle, DeviceError> {
        let dtype = acl_type(elem).map_err(|m| self.fail(m))?;
        let storage = [storage];
        // SAFETY: dims and strides hold dims.len() values; `data` is a live device buffer.
        let t = unsafe {
            (self.device.rt.acl.api.create_tensor)(
                dims.as_ptr(),
                dims.len() as u64,
                dtype,
                strides.as_ptr(),
                0,
                acl::FORMAT_ND,
                storage.as_ptr(),
                1,
                data as *mut c_void,
            )
        };
        if t.is_null() {
            return Err(self.fail(format!("aclCreateTensor of {dims:?} {elem} returned null")));
        }
        self.pending.tensors.push(t);
        Ok(t)
    }

    /// A contiguous descriptor of `dims`.
    fn dense(
        &mut self,
        data: *mut u8,
        elem: ElemType,
        dims: &[i64],
    ) -> Result<Handle, DeviceError> {
        let mut strides = vec![1i64; dims.len()];
        for i in (0..dims.len().saturating_sub(1)).rev() {
            strides[i] = strides[i + 1] * dims[i + 1];
        }
        self.tensor(data, elem, dims, &strides, dims.iter().product())
    }

    fn scalar_one(&mut self) -> Result<Handle, DeviceError> {
        let mut one = 1.0f32;
        // SAFETY: aclCreateScalar copies the value.
        let s = unsafe {
            (self.device.rt.acl.api.create_scalar)(
                &mut one as *mut f32 as *mut c_void,
                acl::ACL_FLOAT,
            )
        };
        if s.is_null() {
            return Err(self.fail("aclCreateScalar returned null"));
        }
        self.pending.scalars.push(s);
        Ok(s)
    }

    /// Runs an executor made by `what`'s first phase (status `status`, workspace `bytes`).
    fn run(
        &mut self,
        what: &str,
        status: i32,
        bytes: u64,
        exec: Handle,
        op: RunOp,
    ) -> Result<(), DeviceError> {
        self.device
            .rt
            .check(status, &format!("{what}GetWorkspaceSize"))?;
        let ws = self.device.workspace(bytes)?;
        // SAFETY: the executor was just made; the workspace holds `bytes`.
        let status = unsafe { op(ws, bytes, exec, self.device.rt.stream) };
        self.device.rt.check(status, what)
    }
}

/// A row-major matrix operand `rows × cols` of each batch entry, read transposed when
/// `transposed` (stored `cols × rows`).
fn operand(batch: usize, rows: usize, cols: usize, transposed: bool) -> (Vec<i64>, Vec<i64>) {
    let (r, c) = (rows as i64, cols as i64);
    let (mut dims, mut strides) = if transposed {
        (vec![r, c], vec![1, r])
    } else {
        (vec![r, c], vec![c, 1])
    };
    if batch > 1 {
        dims.insert(0, batch as i64);
        strides.insert(0, r * c);
    }
    (dims, strides)
}

/// Enqueues the GEMM, gather or scatter-add `step`, its buffers at `at`.
pub(super) fn run(
    device: &mut AscendDevice,
    step: &Step,
    at: &dyn Fn(&BufferRef) -> *mut u8,
    pending: &mut Pending,
) -> Result<(), DeviceError> {
    let mut op = Op { device, pending };
    let mut bytes = 0u64;
    let mut exec: Handle = std::ptr::null_mut();
    match step {
        Step::Gemm {
            a,
            b,
            c,
            transpose_a,
            transpose_b,
            batch,
            m,
            n,
            k,
            precision,
            ..
        } => {
            let elem = precision.input;
            let (da, sa) = operand(*batch, *m, *k, *transpose_a);
            let (db, sb) = operand(*batch, *k, *n, *transpose_b);
            let ta = op.tensor(at(a), elem, &da, &sa, (batch * m * k) as i64)?;
            let tb = op.tensor(at(b), elem, &db, &sb, (batch * k * n) as i64)?;
            let (dc, _) = operand(*batch, *m, *n, false);
            let tc = op.dense(at(c), c.elem, &dc)?;
            let api = &op.device.rt.acl.api;
            // SAFETY: descriptors just made; out-pointers valid.
            let status = unsafe {
                (api.matmul_workspace)(ta, tb, tc, acl::KEEP_DTYPE, &mut bytes, &mut exec)
            };
            let run = api.matmul;
            op.run("aclnnMatmul", status, bytes, exec, run)
        }
        Step::Gather {
            table,
            indices,
            out,
        } => {
            let rows = table.shape[0] as i64;
            let row = (table.numel() as i64) / rows.max(1);
            let n = indices.numel() as i64;
            let tw = op.dense(at(table), table.elem, &[rows, row])?;
            let ti = op.dense(at(indices), indices.elem, &[n])?;
            let to = op.dense(at(out), out.elem, &[n, row])?;
            let api = &op.device.rt.acl.api;
            // SAFETY: as above.
            let status = unsafe { (api.embedding_workspace)(tw, ti, to, &mut bytes, &mut exec) };
            let run = api.embedding;
            op.run("aclnnEmbedding", status, bytes, exec, run)
        }
        Step::ScatterAdd {
            indices,
            updates,
            out,
        } => {
            let rows = out.shape[0] as i64;
            let row = (out.numel() as i64) / rows.max(1);
            let n = indices.numel() as i64;
            let rt = op.device.rt.clone();
            // SAFETY: `out` holds out.bytes() bytes.
            let status = unsafe {
                (rt.acl.api.memset_async)(
                    at(out) as *mut c_void,
                    out.bytes(),
                    0,
                    out.bytes(),
                    rt.stream,
                )
            };
            rt.check(status, "aclrtMemsetAsync")?;
            let to = op.dense(at(out), out.elem, &[rows, row])?;
            let ti = op.dense(at(indices), indices.elem, &[n])?;
            let tu = op.dense(at(updates), updates.elem, &[n, row])?;
            let alpha = op.scalar_one()?;
            let api = &rt.acl.api;
            // SAFETY: as above; `out` is both self and out (in place, as aclnn allows).
            let status = unsafe {
                (api.index_add_workspace)(to, 0, ti, tu, alpha, to, &mut bytes, &mut exec)
            };
            op.run("aclnnIndexAdd", status, bytes, exec, api.index_add)
        }
        _ => Err(op.fail("not an aclnn step")),
    }
}
