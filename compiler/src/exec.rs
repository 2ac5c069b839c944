//! Executes a fused, memory-planned graph kernel by kernel with the reference interpreter, with
//! every intermediate stored in a byte arena at its planned offset. Agreement with the plain
//! interpreter shows that fusion kept the semantics and that the plan never lets two live
//! values share bytes.

use crate::fusion::{Fusion, Kernel};
use crate::plan::{Location, MemoryPlan};
use ir::{Data, Graph, InterpError, Interpreter, Op, Tensor, TensorType, ValueId};
use std::collections::HashMap;

/// The kernel as a standalone graph: inputs `in0, in1, …` (the kernel's inputs in order) and
/// outputs `out0, out1, …` (the kernel's outputs in order).
pub fn kernel_graph(g: &Graph, k: &Kernel, name: &str) -> Graph {
    let mut sub = Graph::new(name);
    let mut map: HashMap<ValueId, ValueId> = HashMap::new();
    for (i, &x) in k.inputs.iter().enumerate() {
        let v = sub.push(
            Op::Input {
                name: format!("in{i}"),
            },
            vec![],
            g.ty(x).clone(),
        );
        map.insert(x, v);
    }
    for &v in &k.nodes {
        let n = g.node(v);
        let ins = n.inputs.iter().map(|x| map[x]).collect();
        let nv = sub.push(n.op.clone(), ins, n.ty.clone());
        map.insert(v, nv);
    }
    for (i, &o) in k.outputs.iter().enumerate() {
        sub.outputs.push((format!("out{i}"), map[&o]));
    }
    sub
}

/// Runs `g` as planned; returns the graph outputs in order.
pub fn run_planned(
    g: &Graph,
    fusion: &Fusion,
    plan: &MemoryPlan,
    inputs: &HashMap<String, Tensor>,
) -> Result<Vec<(String, Tensor)>, InterpError> {
    let input_names: Vec<(&str, ValueId)> = g.inputs().collect();
    let mut arena = vec![0u8; plan.arena_bytes];
    let mut outputs: HashMap<usize, Tensor> = HashMap::new();
    let fetch = |v: ValueId,
                 arena: &[u8],
                 outputs: &HashMap<usize, Tensor>|
     -> Result<Tensor, InterpError> {
        let ty: &TensorType = g.ty(v);
        let t = match plan.location[v.index()].expect("materialized value") {
            Location::Input(i) => {
                let name = input_names[i].0;
                inputs
                    .get(name)
                    .cloned()
                    .ok_or_else(|| InterpError::MissingInput {
                        name: name.into(),
                        expected: ty.clone(),
                    })?
            }
            Location::Output(i) => outputs[&i].clone(),
            Location::Arena { offset } => {
                let len = ty.numel() * ty.dtype.size_bytes();
                return Ok(Tensor::new(
                    ty.shape.clone(),
                    Data::from_le_bytes(ty.dtype, &arena[offset..offset + len]),
                ));
            }
        };
        Ok(Tensor::new(ty.shape.clone(), t.data))
    };
    for (ki, k) in fusion.kernels.iter().enumerate() {
        let sub = kernel_graph(g, k, &format!("k{ki}"));
        let mut feed = HashMap::new();
        for (i, &x) in k.inputs.iter().enumerate() {
            feed.insert(format!("in{i}"), fetch(x, &arena, &outputs)?);
        }
        let res = Interpreter::run(&sub, &feed)?;
        for (&o, (_, t)) in k.outputs.iter().zip(res) {
            match plan.location[o.index()].expect("kernel outputs are placed") {
                Location::Arena { offset } => {
                    let bytes = t.data.to_le_bytes();
                    arena[offset..offset + bytes.len()].copy_from_slice(&bytes);
                }
                Location::Output(i) => {
                    outputs.insert(i, t);
                }
                Location::Input(_) => unreachable!("kernels never write graph inputs"),
            }
        }
    }
    g.outputs
        .iter()
        .map(|(name, v)| Ok((name.clone(), fetch(*v, &arena, &outputs)?)))
        .collect()
}
