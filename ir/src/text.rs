//! The textual form of a graph, e.g.
//!
//! ```text
//! graph "example" {
//!   %0 = input "x" : f32[2,3]
//!   %1 = constant 2.0 : f32[2,3]
//!   %2 = mul %0, %1 : f32[2,3]
//!   %3 = reduce_sum %2 {axes = [0, 1]} : f32[]
//!   output "loss" = %3
//! }
//! ```
//!
//! [`print`] and [`parse`] round-trip exactly: `print(parse(print(g))) == print(g)`. Floats are
//! printed in Rust's shortest round-trip form, so constants survive bit for bit.

use crate::graph::{Graph, ValueId};
use crate::op::{BinaryOp, CmpOp, Op, ReduceKind, UnaryOp};
use crate::types::{DType, TensorType};
use crate::verify::check_node;
use std::collections::HashMap;
use std::fmt::Write;

fn list(v: &[usize]) -> String {
    let parts: Vec<String> = v.iter().map(|x| x.to_string()).collect();
    format!("[{}]", parts.join(", "))
}

fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

fn attrs(op: &Op) -> Vec<(&'static str, String)> {
    match op {
        Op::Iota { axis } => vec![("axis", axis.to_string())],
        Op::Broadcast { dims } => vec![("dims", list(dims))],
        Op::Transpose { perm } => vec![("perm", list(perm))],
        Op::Reduce { axes, .. } => vec![("axes", list(axes))],
        Op::MatMul {
            transpose_a,
            transpose_b,
        } => vec![
            ("transpose_a", transpose_a.to_string()),
            ("transpose_b", transpose_b.to_string()),
        ],
        Op::Slice { start, end } => vec![("start", list(start)), ("end", list(end))],
        Op::Pad { low, high } => vec![("low", list(low)), ("high", list(high))],
        Op::RandomUniform { op_id } => vec![("op_id", op_id.to_string())],
        _ => vec![],
    }
}

/// Prints the graph in the text format.
pub fn print(g: &Graph) -> String {
    let mut s = String::new();
    writeln!(s, "graph {} {{", quote(&g.name)).unwrap();
    for (i, n) in g.nodes.iter().enumerate() {
        write!(s, "  %{i} = {}", n.op.mnemonic()).unwrap();
        match &n.op {
            Op::Input { name } => write!(s, " {}", quote(name)).unwrap(),
            Op::Constant { value } => write!(s, " {value:?}").unwrap(),
            _ => {}
        }
        let ops: Vec<String> = n.inputs.iter().map(|v| v.to_string()).collect();
        if !ops.is_empty() {
            write!(s, " {}", ops.join(", ")).unwrap();
        }
        let a = attrs(&n.op);
        if !a.is_empty() {
            let parts: Vec<String> = a.iter().map(|(k, v)| format!("{k} = {v}")).collect();
            write!(s, " {{{}}}", parts.join(", ")).unwrap();
        }
        writeln!(s, " : {}", n.ty).unwrap();
    }
    for (name, v) in &g.outputs {
        writeln!(s, "  output {} = {v}", quote(name)).unwrap();
    }
    s.push_str("}\n");
    s
}

/// A parse error at a 1-based line and column.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{line}:{col}: {message}")]
pub struct ParseError {
    pub line: usize,
    pub col: usize,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Word(String),
    Value(String),
    Str(String),
    Punct(char),
    Eof,
}

struct Token {
    tok: Tok,
    line: usize,
    col: usize,
}

fn lex(src: &str) -> Result<Vec<Token>, ParseError> {
    let mut out = Vec::new();
    let chars: Vec<char> = src.chars().collect();
    let (mut i, mut line, mut col) = (0usize, 1usize, 1usize);
    let is_word = |c: char| !c.is_whitespace() && !"=,:[]{}\"%".contains(c) && c != '/';
    while i < chars.len() {
        let c = chars[i];
        let (l0, c0) = (line, col);
        let bump = |i: &mut usize, line: &mut usize, col: &mut usize| {
            if chars[*i] == '\n' {
                *line += 1;
                *col = 1;
            } else {
                *col += 1;
            }
            *i += 1;
        };
        if c.is_whitespace() {
            bump(&mut i, &mut line, &mut col);
        } else if c == '/' && chars.get(i + 1) == Some(&'/') {
            while i < chars.len() && chars[i] != '\n' {
                bump(&mut i, &mut line, &mut col);
            }
        } else if "=,:[]{}".contains(c) {
            out.push(Token {
                tok: Tok::Punct(c),
                line: l0,
                col: c0,
            });
            bump(&mut i, &mut line, &mut col);
        } else if c == '"' {
            bump(&mut i, &mut line, &mut col);
            let mut s = String::new();
            loop {
                match chars.get(i) {
                    None | Some('\n') => {
                        return Err(ParseError {
                            line: l0,
                            col: c0,
                            message: "unterminated string".into(),
                        })
                    }
                    Some('"') => {
                        bump(&mut i, &mut line, &mut col);
                        break;
                    }
                    Some('\\') if matches!(chars.get(i + 1), Some('"') | Some('\\')) => {
                        s.push(chars[i + 1]);
                        bump(&mut i, &mut line, &mut col);
                        bump(&mut i, &mut line, &mut col);
                    }
                    Some(&ch) => {
                        s.push(ch);
                        bump(&mut i, &mut line, &mut col);
                    }
                }
            }
            out.push(Token {
                tok: Tok::Str(s),
                line: l0,
                col: c0,
            });
        } else if c == '%' {
            bump(&mut i, &mut line, &mut col);
            let mut s = String::new();
            while i < chars.len() && is_word(chars[i]) {
                s.push(chars[i]);
                bump(&mut i, &mut line, &mut col);
            }
            if s.is_empty() {
                return Err(ParseError {
                    line: l0,
                    col: c0,
                    message: "expected a value name after '%'".into(),
                });
            }
            out.push(Token {
                tok: Tok::Value(s),
                line: l0,
                col: c0,
            });
        } else if is_word(c) {
            let mut s = String::new();
            while i < chars.len() && is_word(chars[i]) {
                s.push(chars[i]);
                bump(&mut i, &mut line, &mut col);
            }
            out.push(Token {
                tok: Tok::Word(s),
                line: l0,
                col: c0,
            });
        } else {
            return Err(ParseError {
                line: l0,
                col: c0,
                message: format!("unexpected character '{c}'"),
            });
        }
    }
    out.push(Token {
        tok: Tok::Eof,
        line,
        col,
    });
    Ok(out)
}

fn describe(t: &Tok) -> String {
    match t {
        Tok::Word(w) => format!("'{w}'"),
        Tok::Value(v) => format!("'%{v}'"),
        Tok::Str(s) => format!("string \"{s}\""),
        Tok::Punct(c) => format!("'{c}'"),
        Tok::Eof => "end of input".into(),
    }
}

struct Parser {
    toks: Vec<Token>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> &Tok {
        &self.toks[self.pos].tok
    }
    fn here(&self) -> (usize, usize) {
        let t = &self.toks[self.pos];
        (t.line, t.col)
    }
    fn err<T>(&self, message: impl Into<String>) -> Result<T, ParseError> {
        let (line, col) = self.here();
        Err(ParseError {
            line,
            col,
            message: message.into(),
        })
    }
    fn next(&mut self) -> Tok {
        let t = self.toks[self.pos].tok.clone();
        if t != Tok::Eof {
            self.pos += 1;
        }
        t
    }
    fn punct(&mut self, c: char) -> Result<(), ParseError> {
        if *self.peek() == Tok::Punct(c) {
            self.next();
            Ok(())
        } else {
            self.err(format!("expected '{c}', found {}", describe(self.peek())))
        }
    }
    fn keyword(&mut self, k: &str) -> Result<(), ParseError> {
        match self.peek() {
            Tok::Word(w) if w == k => {
                self.next();
                Ok(())
            }
            t => self.err(format!("expected '{k}', found {}", describe(t))),
        }
    }
    fn string(&mut self) -> Result<String, ParseError> {
        match self.peek().clone() {
            Tok::Str(s) => {
                self.next();
                Ok(s)
            }
            t => self.err(format!("expected a string, found {}", describe(&t))),
        }
    }
    fn word(&mut self, what: &str) -> Result<String, ParseError> {
        match self.peek().clone() {
            Tok::Word(w) => {
                self.next();
                Ok(w)
            }
            t => self.err(format!("expected {what}, found {}", describe(&t))),
        }
    }
    fn usize(&mut self) -> Result<usize, ParseError> {
        let w = self.word("an integer")?;
        w.parse().or_else(|_| {
            self.pos -= 1;
            self.err(format!("expected a non-negative integer, found '{w}'"))
        })
    }
    fn usize_list(&mut self) -> Result<Vec<usize>, ParseError> {
        self.punct('[')?;
        let mut v = Vec::new();
        if *self.peek() != Tok::Punct(']') {
            loop {
                v.push(self.usize()?);
                if *self.peek() == Tok::Punct(',') {
                    self.next();
                } else {
                    break;
                }
            }
        }
        self.punct(']')?;
        Ok(v)
    }
    fn ty(&mut self) -> Result<TensorType, ParseError> {
        let w = self.word("a type such as f32[2,3]")?;
        let Some(dtype) = DType::from_name(&w) else {
            self.pos -= 1;
            return self.err(format!(
                "unknown dtype '{w}' (expected one of f32, f16, bf16, f64, i32, i64, bool)"
            ));
        };
        let shape = self.usize_list()?;
        if crate::types::checked_numel(&shape).is_none() {
            return self.err(format!(
                "tensor type {}{} has more than 2^40 elements",
                dtype.name(),
                crate::types::shape_str(&shape)
            ));
        }
        Ok(TensorType { dtype, shape })
    }
}

fn mnemonic_op(m: &str) -> Option<Op> {
    if let Some(u) = UnaryOp::ALL.into_iter().find(|u| u.name() == m) {
        return Some(Op::Unary(u));
    }
    if let Some(b) = BinaryOp::ALL.into_iter().find(|b| b.name() == m) {
        return Some(Op::Binary(b));
    }
    if let Some(c) = CmpOp::ALL.into_iter().find(|c| c.name() == m) {
        return Some(Op::Compare(c));
    }
    if let Some(kind) = ReduceKind::ALL.into_iter().find(|k| k.name() == m) {
        return Some(Op::Reduce { kind, axes: vec![] });
    }
    Some(match m {
        "input" => Op::Input {
            name: String::new(),
        },
        "constant" => Op::Constant { value: 0.0 },
        "iota" => Op::Iota { axis: 0 },
        "select" => Op::Select,
        "cast" => Op::Cast,
        "broadcast" => Op::Broadcast { dims: vec![] },
        "reshape" => Op::Reshape,
        "transpose" => Op::Transpose { perm: vec![] },
        "matmul" => Op::MatMul {
            transpose_a: false,
            transpose_b: false,
        },
        "gather" => Op::Gather,
        "scatter_add" => Op::ScatterAdd,
        "slice" => Op::Slice {
            start: vec![],
            end: vec![],
        },
        "pad" => Op::Pad {
            low: vec![],
            high: vec![],
        },
        "random_uniform" => Op::RandomUniform { op_id: 0 },
        "all_reduce_mean" => Op::AllReduceMean,
        _ => return None,
    })
}

/// Parses the text format; errors carry the line and column.
pub fn parse(src: &str) -> Result<Graph, ParseError> {
    let mut p = Parser {
        toks: lex(src)?,
        pos: 0,
    };
    p.keyword("graph")?;
    let name = p.string()?;
    p.punct('{')?;
    let mut g = Graph::new(name);
    let mut names: HashMap<String, ValueId> = HashMap::new();
    let value_ref =
        |p: &mut Parser, names: &HashMap<String, ValueId>| -> Result<ValueId, ParseError> {
            match p.peek().clone() {
                Tok::Value(v) => match names.get(&v) {
                    Some(&id) => {
                        p.next();
                        Ok(id)
                    }
                    None => p.err(format!("value %{v} is used before it is defined")),
                },
                t => p.err(format!(
                    "expected a value such as %3, found {}",
                    describe(&t)
                )),
            }
        };
    loop {
        match p.peek().clone() {
            Tok::Punct('}') => {
                p.next();
                break;
            }
            Tok::Word(w) if w == "output" => {
                p.next();
                let oname = p.string()?;
                if g.outputs.iter().any(|(n, _)| *n == oname) {
                    p.pos -= 1;
                    return p.err(format!("output \"{oname}\" defined twice"));
                }
                p.punct('=')?;
                let v = value_ref(&mut p, &names)?;
                g.outputs.push((oname, v));
            }
            Tok::Value(v) => {
                if names.contains_key(&v) {
                    return p.err(format!("value %{v} is defined twice"));
                }
                p.next();
                p.punct('=')?;
                let (ml, mc) = p.here();
                let m = p.word("an op name")?;
                let Some(mut op) = mnemonic_op(&m) else {
                    return Err(ParseError {
                        line: ml,
                        col: mc,
                        message: format!("unknown op '{m}'"),
                    });
                };
                match &mut op {
                    Op::Input { name } => {
                        *name = p.string()?;
                        if g.inputs().any(|(n, _)| n == name.as_str()) {
                            p.pos -= 1;
                            return p.err(format!("input \"{name}\" defined twice"));
                        }
                    }
                    Op::Constant { value } => {
                        let w = p.word("a number")?;
                        *value = w.parse().or_else(|_| {
                            p.pos -= 1;
                            p.err(format!("expected a number, found '{w}'"))
                        })?;
                    }
                    _ => {}
                }
                let mut operands = Vec::new();
                if matches!(p.peek(), Tok::Value(_)) {
                    loop {
                        operands.push(value_ref(&mut p, &names)?);
                        if *p.peek() == Tok::Punct(',') {
                            p.next();
                        } else {
                            break;
                        }
                    }
                }
                let mut seen: Vec<String> = Vec::new();
                if *p.peek() == Tok::Punct('{') {
                    p.next();
                    loop {
                        let (kl, kc) = p.here();
                        let key = p.word("an attribute name")?;
                        if seen.contains(&key) {
                            return Err(ParseError {
                                line: kl,
                                col: kc,
                                message: format!("attribute '{key}' given twice"),
                            });
                        }
                        p.punct('=')?;
                        let ok = match (&mut op, key.as_str()) {
                            (Op::Iota { axis }, "axis") => {
                                *axis = p.usize()?;
                                true
                            }
                            (Op::Broadcast { dims }, "dims") => {
                                *dims = p.usize_list()?;
                                true
                            }
                            (Op::Transpose { perm }, "perm") => {
                                *perm = p.usize_list()?;
                                true
                            }
                            (Op::Reduce { axes, .. }, "axes") => {
                                *axes = p.usize_list()?;
                                true
                            }
                            (Op::Slice { start, .. }, "start") => {
                                *start = p.usize_list()?;
                                true
                            }
                            (Op::Slice { end, .. }, "end") => {
                                *end = p.usize_list()?;
                                true
                            }
                            (Op::Pad { low, .. }, "low") => {
                                *low = p.usize_list()?;
                                true
                            }
                            (Op::Pad { high, .. }, "high") => {
                                *high = p.usize_list()?;
                                true
                            }
                            (Op::RandomUniform { op_id }, "op_id") => {
                                let v = p.usize()?;
                                *op_id = u32::try_from(v)
                                    .or_else(|_| p.err("op_id does not fit in 32 bits"))?;
                                true
                            }
                            (
                                Op::MatMul {
                                    transpose_a,
                                    transpose_b,
                                },
                                "transpose_a" | "transpose_b",
                            ) => {
                                let w = p.word("true or false")?;
                                let b = match w.as_str() {
                                    "true" => true,
                                    "false" => false,
                                    _ => {
                                        p.pos -= 1;
                                        return p
                                            .err(format!("expected true or false, found '{w}'"));
                                    }
                                };
                                if key == "transpose_a" {
                                    *transpose_a = b
                                } else {
                                    *transpose_b = b
                                }
                                true
                            }
                            _ => false,
                        };
                        if !ok {
                            return Err(ParseError {
                                line: kl,
                                col: kc,
                                message: format!("'{m}' has no attribute '{key}'"),
                            });
                        }
                        seen.push(key);
                        if *p.peek() == Tok::Punct(',') {
                            p.next();
                        } else {
                            break;
                        }
                    }
                    p.punct('}')?;
                }
                let required: &[&str] = match &op {
                    Op::Iota { .. } => &["axis"],
                    Op::Broadcast { .. } => &["dims"],
                    Op::Transpose { .. } => &["perm"],
                    Op::Reduce { .. } => &["axes"],
                    Op::Slice { .. } => &["start", "end"],
                    Op::Pad { .. } => &["low", "high"],
                    Op::RandomUniform { .. } => &["op_id"],
                    _ => &[],
                };
                if let Some(missing) = required.iter().find(|k| !seen.iter().any(|s| s == *k)) {
                    return Err(ParseError {
                        line: ml,
                        col: mc,
                        message: format!("'{m}' needs the attribute '{missing}'"),
                    });
                }
                p.punct(':')?;
                let ty = p.ty()?;
                let in_types: Vec<&TensorType> = operands.iter().map(|&o| g.ty(o)).collect();
                if let Err(e) = check_node(&op, &in_types, &ty) {
                    return Err(ParseError {
                        line: ml,
                        col: mc,
                        message: e,
                    });
                }
                let id = g.push(op, operands, ty);
                names.insert(v, id);
            }
            t => {
                return p.err(format!(
                    "expected a node definition (%N = ...), 'output' or '}}', found {}",
                    describe(&t)
                ))
            }
        }
    }
    if *p.peek() != Tok::Eof {
        return p.err(format!("unexpected {} after the graph", describe(p.peek())));
    }
    crate::verify::verify(&g).map_err(|e| ParseError {
        line: 0,
        col: 0,
        message: e.to_string(),
    })?;
    Ok(g)
}
