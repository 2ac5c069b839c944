//! The contract between the compiler and the runtime, and nothing else: the serialized
//! executable plan of each phase ([`exec`]), the manifest linked beside it ([`manifest`]), the
//! one element-type enum ([`ElemType`], the IR's `DType` too), the BERT parameter schema
//! ([`bert`]), the names of the training state ([`names`]) and the kernel-library ABI ([`abi`]), and the GPU and Ascend kernel tables ([`gpu`], [`ascend`]).
//!
//! It depends on serde only, so the compiler needs no runtime and the runtime no compiler.

pub mod abi;
pub mod ascend;
pub mod bert;
pub mod elem;
pub mod exec;
pub mod gpu;
pub mod manifest;
pub mod names;

pub use elem::{checked_numel, ElemType, MAX_ELEMENTS};
