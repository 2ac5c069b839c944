//! The tbc compiler: the frontend that builds TinyBERT training graphs in the IR, and (in later
//! stages) the passes that simplify, fuse and plan them for the targets.

pub mod exec;
pub mod executable;
pub mod frontend;
pub mod fusion;
pub mod passes;
pub mod pipeline;
pub mod plan;
