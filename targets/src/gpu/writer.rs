//! Writes the code of GPU kernels as *block programs* in one of two flavors.
//!
//! A kernel launch is a grid of blocks; a block runs a sequence of *phases* separated by
//! barriers and warp exchanges; a phase is code that every thread of the block runs, with the
//! thread's index, per-thread registers that live across phases, the block's shared memory and
//! the global buffers. The kernel builders (`kernels.rs`) describe each launch through this
//! writer once, and the writer spells it as:
//!
//! - [`Flavor::Gpu`]: one `gpu.func` per launch (`gpu.thread_id`, `gpu.block_id`,
//!   `gpu.barrier`, `gpu.shuffle xor`, workgroup memory), lowered to NVVM and PTX;
//! - [`Flavor::CpuEmulation`]: one `func.func` per kernel for the host CPU that runs the same
//!   launches: a loop over blocks, inside it one loop over threads per phase, registers as
//!   per-thread arrays, a warp exchange as a copy between them (lane `t` reads lane `t ^ k`).
//!
//! Both flavors contain the same per-thread scalar code (`crate::scalar`, except that the five
//! math instructions are `math` ops on the CPU and PTX instructions on the GPU), so index
//! arithmetic, tail guards and reduction trees of the GPU kernels run in `make test` against
//! the interpreter. Values that cross a phase must go through a register: an SSA value of one
//! phase does not dominate the next phase's thread loop (the CPU flavor fails to verify).

use crate::scalar::{MathSpelling, ScalarSink};
use ir::DType;
use std::collections::HashMap;
use std::fmt::Write as _;

/// Which program the writer spells.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    Gpu,
    CpuEmulation,
}

/// Threads of a warp (the width of `gpu.shuffle`).
pub const WARP: usize = 32;

/// The element type of `d` in GPU memory (f16 as itself, bf16 as its bits: see
/// `scalar::half`), and in registers (16-bit floats in f32).
pub use crate::scalar::{mem_ty, reg_ty};

/// A global buffer parameter: a flat array of `len` elements of `dtype` (see [`mem_ty`]).
#[derive(Clone, Debug, PartialEq)]
pub struct BufferParam {
    pub dtype: DType,
    pub len: usize,
}

impl BufferParam {
    pub fn memref_ty(&self) -> String {
        format!("memref<{}x{}>", self.len.max(1), mem_ty(self.dtype))
    }
}

/// A per-thread register (an MLIR register type: `f32`, `f64`, `i32`, `index`).
#[derive(Clone, Debug)]
pub struct Reg {
    name: String,
    ty: String,
}

/// A shared-memory array of the current launch.
#[derive(Clone, Debug)]
pub struct Shared {
    name: String,
    ty: String,
}

/// One function being written (a `gpu.func` for one launch, or the emulation `func.func`).
pub struct Writer {
    flavor: Flavor,
    next: usize,
    consts: HashMap<(String, String), String>,
    /// Constants, ids and allocations, at the top of the function.
    prologue: String,
    code: String,
    depth: usize,
    /// Workgroup attributions of the `gpu.func`.
    workgroup: Vec<String>,
    threads: usize,
    block_id: String,
    thread_id: Option<String>,
    in_phase: bool,
    /// Open scopes' closing text.
    open: Vec<&'static str>,
}

impl Writer {
    pub fn new(flavor: Flavor) -> Writer {
        Writer {
            flavor,
            next: 0,
            consts: HashMap::new(),
            prologue: String::new(),
            code: String::new(),
            depth: 2,
            workgroup: Vec::new(),
            threads: 0,
            block_id: String::new(),
            thread_id: None,
            in_phase: false,
            open: Vec::new(),
        }
    }

    pub fn flavor(&self) -> Flavor {
        self.flavor
    }

    fn fresh(&mut self, prefix: &str) -> String {
        self.next += 1;
        format!("%{prefix}{}", self.next)
    }

    fn line(&mut self, text: &str) {
        for _ in 0..self.depth {
            self.code.push_str("  ");
        }
        self.code.push_str(text);
        self.code.push('\n');
    }

    fn pro(&mut self, rhs: String) -> String {
        let v = self.fresh("p");
        writeln!(self.prologue, "    {v} = {rhs}").unwrap();
        v
    }

    /// An `index` constant.
    pub fn index(&mut self, v: usize) -> String {
        self.constant(v.to_string(), "index")
    }

    /// `a <op> b` on `index` values (`addi`, `muli`, `divui`, `remui`, `minui`).
    pub fn ix(&mut self, op: &str, a: &str, b: &str) -> String {
        self.op(format!("arith.{op} {a}, {b} : index"))
    }

    /// Starts a launch of `grid` blocks of `threads` threads. The CPU flavor opens the loop
    /// over blocks; on the GPU the function is the launch.
    pub fn begin_launch(&mut self, grid: usize, threads: usize) {
        assert!(threads.is_multiple_of(WARP) && threads <= 1024);
        self.threads = threads;
        match self.flavor {
            Flavor::Gpu => {
                self.block_id = self.pro("gpu.block_id x".into());
                let t = self.pro("gpu.thread_id x".into());
                self.thread_id = Some(t);
            }
            Flavor::CpuEmulation => {
                let (zero, one, g) = (self.index(0), self.index(1), self.index(grid));
                let b = self.fresh("blk");
                self.line(&format!("scf.for {b} = {zero} to {g} step {one} {{"));
                self.depth += 1;
                self.block_id = b;
                self.thread_id = None;
            }
        }
    }

    pub fn end_launch(&mut self) {
        assert!(self.open.is_empty() && !self.in_phase, "unclosed scopes");
        if self.flavor == Flavor::CpuEmulation {
            self.depth -= 1;
            self.line("}");
        }
    }

    pub fn block_id(&self) -> String {
        self.block_id.clone()
    }

    /// The thread's index in its block (inside a phase only).
    pub fn thread_id(&self) -> String {
        assert!(self.in_phase, "thread_id outside a phase");
        self.thread_id.clone().expect("in a launch")
    }

    /// Starts code that every thread of the block runs.
    pub fn begin_phase(&mut self) {
        assert!(!self.in_phase);
        self.in_phase = true;
        if self.flavor == Flavor::CpuEmulation {
            let (zero, one, t) = (self.index(0), self.index(1), self.index(self.threads));
            let tid = self.fresh("tid");
            self.line(&format!("scf.for {tid} = {zero} to {t} step {one} {{"));
            self.depth += 1;
            self.thread_id = Some(tid);
        }
    }

    pub fn end_phase(&mut self) {
        assert!(self.in_phase);
        self.in_phase = false;
        if self.flavor == Flavor::CpuEmulation {
            self.depth -= 1;
            self.line("}");
            self.thread_id = None;
        }
    }

    /// Every thread of the block waits until all have arrived (block level, between phases).
    pub fn barrier(&mut self) {
        assert!(!self.in_phase);
        if self.flavor == Flavor::Gpu {
            self.line("gpu.barrier");
        }
    }

    /// A register of MLIR type `ty` in every thread of the current launch.
    pub fn register(&mut self, ty: &str) -> Reg {
        let len = match self.flavor {
            Flavor::Gpu => 1,
            Flavor::CpuEmulation => self.threads,
        };
        let name = self.pro(format!("memref.alloca() : memref<{len}x{ty}>"));
        Reg {
            name,
            ty: format!("memref<{len}x{ty}>"),
        }
    }

    fn reg_slot(&mut self) -> String {
        match self.flavor {
            Flavor::Gpu => self.index(0),
            Flavor::CpuEmulation => self.thread_id(),
        }
    }

    pub fn load_reg(&mut self, r: &Reg) -> String {
        let slot = self.reg_slot();
        self.op(format!("memref.load {}[{slot}] : {}", r.name, r.ty))
    }

    pub fn store_reg(&mut self, r: &Reg, value: &str) {
        let slot = self.reg_slot();
        self.line(&format!(
            "memref.store {value}, {}[{slot}] : {}",
            r.name, r.ty
        ));
    }

    /// Block level: `dst` of lane `t` becomes `src` of lane `t ^ offset` in its warp.
    pub fn shuffle_xor(&mut self, src: &Reg, dst: &Reg, offset: usize) {
        assert!(offset < WARP && !self.in_phase);
        let elem = src.ty.rsplit('x').next().unwrap().trim_end_matches('>');
        let elem = elem.to_string();
        match self.flavor {
            Flavor::Gpu => {
                let x = self.load_reg_block(src);
                let off = self.constant(offset.to_string(), "i32");
                let width = self.constant(WARP.to_string(), "i32");
                let y = self.fresh("sh");
                self.line(&format!(
                    "{y}, {y}ok = gpu.shuffle xor {x}, {off}, {width} : {elem}"
                ));
                let slot = self.index(0);
                self.line(&format!(
                    "memref.store {y}, {}[{slot}] : {}",
                    dst.name, dst.ty
                ));
            }
            Flavor::CpuEmulation => {
                self.begin_phase();
                let t = self.thread_id();
                let k = self.index(offset);
                let lane = self.ix("xori", &t, &k);
                let x = self.op(format!("memref.load {}[{lane}] : {}", src.name, src.ty));
                self.store_reg(dst, &x);
                self.end_phase();
            }
        }
    }

    fn load_reg_block(&mut self, r: &Reg) -> String {
        let slot = self.index(0);
        self.op(format!("memref.load {}[{slot}] : {}", r.name, r.ty))
    }

    /// A shared-memory array of `len` elements of MLIR type `ty` for the current launch.
    pub fn shared(&mut self, ty: &str, len: usize) -> Shared {
        match self.flavor {
            Flavor::Gpu => {
                let name = format!("%wg{}", self.workgroup.len());
                let mty = format!("memref<{len}x{ty}, #gpu.address_space<workgroup>>");
                self.workgroup.push(format!("{name} : {mty}"));
                Shared { name, ty: mty }
            }
            Flavor::CpuEmulation => {
                let mty = format!("memref<{len}x{ty}>");
                let name = self.pro(format!("memref.alloca() : {mty}"));
                Shared { name, ty: mty }
            }
        }
    }

    pub fn load_shared(&mut self, s: &Shared, index: &str) -> String {
        self.op(format!("memref.load {}[{index}] : {}", s.name, s.ty))
    }

    pub fn store_shared(&mut self, s: &Shared, index: &str, value: &str) {
        self.line(&format!(
            "memref.store {value}, {}[{index}] : {}",
            s.name, s.ty
        ));
    }

    /// Element `index` of global buffer `b` (as stored: bool is `i8`).
    pub fn load_global(&mut self, b: usize, param: &BufferParam, index: &str) -> String {
        self.op(format!(
            "memref.load %b{b}[{index}] : {}",
            param.memref_ty()
        ))
    }

    pub fn store_global(&mut self, b: usize, param: &BufferParam, index: &str, value: &str) {
        self.line(&format!(
            "memref.store {value}, %b{b}[{index}] : {}",
            param.memref_ty()
        ));
    }

    /// Opens `scf.for %iv = start to end step step` (index values); returns `%iv`.
    pub fn begin_for(&mut self, start: &str, end: &str, step: &str) -> String {
        let iv = self.fresh("i");
        self.line(&format!("scf.for {iv} = {start} to {end} step {step} {{"));
        self.depth += 1;
        self.open.push("}");
        iv
    }

    /// Opens `scf.if %cond`.
    pub fn begin_if(&mut self, cond: &str) {
        self.line(&format!("scf.if {cond} {{"));
        self.depth += 1;
        self.open.push("}");
    }

    /// Closes the innermost `for` or `if`.
    pub fn end(&mut self) {
        let close = self.open.pop().expect("a scope is open");
        self.depth -= 1;
        self.line(close);
    }

    /// The finished function: `gpu.func @name(buffers) kernel` or `func.func @name(buffers)`.
    pub fn finish(self, name: &str, params: &[BufferParam], threads: usize) -> String {
        // Every buffer a launch gets is 256-byte aligned (device allocations, the arena and
        // workspace offsets): 16 lets contiguous accesses become vector loads and stores.
        let align = match self.flavor {
            Flavor::Gpu => " {llvm.align = 16 : i64}",
            Flavor::CpuEmulation => "",
        };
        let args: Vec<String> = params
            .iter()
            .enumerate()
            .map(|(i, p)| format!("%b{i}: {}{align}", p.memref_ty()))
            .collect();
        match self.flavor {
            Flavor::Gpu => {
                let wg = if self.workgroup.is_empty() {
                    String::new()
                } else {
                    format!(" workgroup({})", self.workgroup.join(", "))
                };
                format!(
                    "    gpu.func @{name}({}){wg} kernel attributes {{known_block_size = array<i32: {threads}, 1, 1>}} {{\n{}{}      gpu.return\n    }}\n",
                    args.join(", "),
                    indent(&self.prologue),
                    indent(&self.code)
                )
            }
            Flavor::CpuEmulation => format!(
                "  func.func @{name}({}) attributes {{llvm.emit_c_interface}} {{\n{}{}    return\n  }}\n",
                args.join(", "),
                self.prologue,
                self.code
            ),
        }
    }
}

/// Two more spaces per line (a `gpu.func` sits inside a `gpu.module`).
fn indent(text: &str) -> String {
    text.lines().map(|l| format!("  {l}\n")).collect()
}

impl ScalarSink for Writer {
    fn op(&mut self, rhs: String) -> String {
        let v = self.fresh("v");
        self.line(&format!("{v} = {rhs}"));
        v
    }

    fn constant(&mut self, lit: String, ty: &str) -> String {
        let key = (lit, ty.to_string());
        if let Some(v) = self.consts.get(&key) {
            return v.clone();
        }
        let v = if ty == "i1" {
            self.pro(format!("arith.constant {}", key.0))
        } else {
            self.pro(format!("arith.constant {} : {ty}", key.0))
        };
        self.consts.insert(key, v.clone());
        v
    }

    fn spelling(&self) -> MathSpelling {
        match self.flavor {
            Flavor::Gpu => MathSpelling::Ptx,
            Flavor::CpuEmulation => MathSpelling::MathDialect,
        }
    }
}
