//! Per-step scalars kept on the device for one sink loop: each step copies the scalars the log
//! needs (the loss scale it read, and the loss terms, overflow flag and learning rate it
//! computed) into its row of one device buffer, and the driver reads all rows with a single
//! download when the loop ends. A GPU then runs a whole sink loop without a host
//! synchronisation (TINYBERT_SPEC §5.3: the seed's data sink), yet every step is still logged.

use crate::device::{BufferId, Device, DeviceError};
use crate::tensor_io::RawTensor;
use plan::elem::ElemType;
use plan::exec::ExecutablePlan;
use std::collections::BTreeMap;

/// Where a recorded scalar comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Source {
    /// An input slot, recorded before the step (the value the step read).
    Input(usize),
    /// An output slot, recorded after the step.
    Output(usize),
}

#[derive(Clone, Debug)]
pub(crate) struct Field {
    pub name: String,
    pub source: Source,
    pub elem: ElemType,
    /// Byte offset within a row.
    pub offset: usize,
}

/// The record buffer of a session: `capacity` rows of `row_bytes`.
pub(crate) struct Records {
    pub buffer: BufferId,
    pub capacity: usize,
    pub row_bytes: usize,
    pub fields: Vec<Field>,
    /// Rows written since the last read.
    pub rows: usize,
}

/// Each field takes 8 bytes of a row, whatever its type (scalars are at most 8 bytes).
const FIELD_BYTES: usize = 8;

impl Records {
    /// Records for the scalar slots of `plan` named in `names` (inputs first looked up among
    /// the inputs, then the outputs; names the plan lacks, or that are not scalars, are left
    /// out), `capacity` rows.
    pub fn new(
        plan: &ExecutablePlan,
        names: &[&str],
        capacity: usize,
        device: &mut dyn Device,
    ) -> Result<Records, DeviceError> {
        let scalar = |shape: &[usize]| shape.iter().product::<usize>() == 1;
        let mut fields = Vec::new();
        for &name in names {
            let input = plan.inputs.iter().position(|s| s.name == name);
            let output = plan.outputs.iter().position(|s| s.name == name);
            let (source, slot) = match (input, output) {
                (Some(i), _) => (Source::Input(i), &plan.inputs[i]),
                (None, Some(o)) => (Source::Output(o), &plan.outputs[o]),
                (None, None) => continue,
            };
            if !scalar(&slot.shape) || slot.elem.size_bytes() > FIELD_BYTES {
                continue;
            }
            fields.push(Field {
                name: name.to_string(),
                source,
                elem: slot.elem,
                offset: fields.len() * FIELD_BYTES,
            });
        }
        let row_bytes = fields.len().max(1) * FIELD_BYTES;
        let capacity = capacity.max(1);
        let buffer = device.allocate(row_bytes * capacity)?;
        Ok(Records {
            buffer,
            capacity,
            row_bytes,
            fields,
            rows: 0,
        })
    }

    /// The byte offset of `field` in the current row.
    pub fn at(&self, field: &Field) -> usize {
        self.rows * self.row_bytes + field.offset
    }

    /// Decodes the first `self.rows` rows of `bytes` (the whole record buffer).
    pub fn decode(&self, bytes: &[u8]) -> Vec<BTreeMap<String, f64>> {
        (0..self.rows)
            .map(|r| {
                self.fields
                    .iter()
                    .map(|f| {
                        let start = r * self.row_bytes + f.offset;
                        let t = RawTensor {
                            elem: f.elem,
                            shape: vec![1],
                            bytes: bytes[start..start + f.elem.size_bytes()].to_vec(),
                        };
                        (f.name.clone(), t.to_f64()[0])
                    })
                    .collect()
            })
            .collect()
    }
}
