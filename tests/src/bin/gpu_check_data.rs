//! Writes the data and models of the prepared GPU check's end-to-end runs into a folder:
//! `train.tfrecord` (40 rows) and `dev.tfrecord` (16 rows) of the tiny 3-class task, and the
//! tiny fixture's `teacher.safetensors` and `student.safetensors` (what the end-to-end tests
//! use). Usage: gpu_check_data DIR
use std::path::PathBuf;
use tbc_tests::e2e::{fixture_model, write_data};

fn main() {
    let Some(dir) = std::env::args().nth(1).map(PathBuf::from) else {
        eprintln!("usage: gpu_check_data DIR");
        std::process::exit(2);
    };
    std::fs::create_dir_all(&dir).expect("create the folder");
    write_data(&dir.join("train.tfrecord"), 40, 3);
    write_data(&dir.join("dev.tfrecord"), 16, 9);
    fixture_model("teacher", &dir.join("teacher.safetensors"));
    fixture_model("student", &dir.join("student.safetensors"));
}
