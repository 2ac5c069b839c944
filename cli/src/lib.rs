//! The `tbc` command as a library, so integration tests can call its pieces.

pub mod compile_cmd;
pub mod data_cmd;
pub mod graph_cmd;
pub mod model_args;
pub mod plot_cmd;
pub mod step;
pub mod tensor_file;
pub mod verify_cmd;
