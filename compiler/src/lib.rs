//! The tbc compiler: the frontend that builds TinyBERT training graphs in the IR, the passes that
//! simplify, fuse and plan them, and the [`driver`] that runs them and hands the planned phases
//! to a [`driver::Target`].

pub mod driver;
pub mod exec;
pub mod executable;
pub mod frontend;
pub mod fusion;
pub mod kernel_analysis;
pub mod manifest;
pub mod passes;
pub mod pipeline;
pub mod plan;
