//! The graph: a list of single-result nodes in definition order (operands always precede their
//! users), plus named outputs.

use crate::op::Op;
use crate::types::TensorType;
use std::fmt;

/// The value produced by a node: its index in [`Graph::nodes`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ValueId(pub u32);

impl ValueId {
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

impl fmt::Display for ValueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "%{}", self.0)
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub op: Op,
    pub inputs: Vec<ValueId>,
    pub ty: TensorType,
}

#[derive(Clone, Debug, PartialEq, Default)]
pub struct Graph {
    pub name: String,
    pub nodes: Vec<Node>,
    pub outputs: Vec<(String, ValueId)>,
}

impl Graph {
    pub fn new(name: impl Into<String>) -> Self {
        Graph {
            name: name.into(),
            nodes: Vec::new(),
            outputs: Vec::new(),
        }
    }

    /// Appends a node without checking it (see [`crate::verify`]).
    pub fn push(&mut self, op: Op, inputs: Vec<ValueId>, ty: TensorType) -> ValueId {
        let id = ValueId(self.nodes.len() as u32);
        self.nodes.push(Node { op, inputs, ty });
        id
    }

    pub fn node(&self, v: ValueId) -> &Node {
        &self.nodes[v.index()]
    }

    pub fn ty(&self, v: ValueId) -> &TensorType {
        &self.nodes[v.index()].ty
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Graph inputs in definition order: `(name, value)`.
    pub fn inputs(&self) -> impl Iterator<Item = (&str, ValueId)> {
        self.nodes
            .iter()
            .enumerate()
            .filter_map(|(i, n)| match &n.op {
                Op::Input { name } => Some((name.as_str(), ValueId(i as u32))),
                _ => None,
            })
    }

    pub fn input(&self, name: &str) -> Option<ValueId> {
        self.inputs().find(|(n, _)| *n == name).map(|(_, v)| v)
    }

    pub fn output(&self, name: &str) -> Option<ValueId> {
        self.outputs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| *v)
    }

    pub fn set_output(&mut self, name: impl Into<String>, v: ValueId) {
        let name = name.into();
        if let Some(slot) = self.outputs.iter_mut().find(|(n, _)| *n == name) {
            slot.1 = v;
        } else {
            self.outputs.push((name, v));
        }
    }

    /// Number of nodes per op mnemonic, sorted by name (for summaries).
    pub fn op_histogram(&self) -> Vec<(&'static str, usize)> {
        let mut counts = std::collections::BTreeMap::new();
        for n in &self.nodes {
            *counts.entry(n.op.mnemonic()).or_insert(0usize) += 1;
        }
        counts.into_iter().collect()
    }
}
