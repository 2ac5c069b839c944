//! tbc's tensor IR: a statically shaped, typed SSA dataflow graph with a verifier, a text format
//! that round-trips exactly, reverse-mode autodiff as a graph-to-graph pass, and the reference
//! interpreter that every compiled target is tested against.

pub mod autodiff;
pub mod builder;
pub mod graph;
pub mod interp;
pub mod op;
pub mod rng;
pub mod tensor;
pub mod text;
pub mod types;
pub mod verify;

pub use builder::Builder;
pub use graph::{Graph, Node, ValueId};
pub use interp::{InterpError, Interpreter};
pub use op::{BinaryOp, CmpOp, Op, ReduceKind, UnaryOp};
pub use tensor::{Data, Tensor};
pub use types::{checked_numel, DType, TensorType, MAX_ELEMENTS};
pub use verify::{verify, VerifyError};
