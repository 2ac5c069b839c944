//! The per-step profile of `TBC_PROFILE=N`: seconds and calls per loop kernel or GEMM shape.

use plan::exec::Step;

/// What a step is, for the profile: the loop kernel's symbol, or the GEMM's shape.
pub fn step_label(step: &Step) -> String {
    match step {
        Step::Loop { symbol, .. } => format!("loop {symbol}"),
        Step::Gemm {
            batch,
            m,
            n,
            k,
            transpose_a,
            transpose_b,
            ..
        } => format!(
            "gemm {batch}x[{m}x{k}]{}·[{k}x{n}]{}",
            if *transpose_a { "ᵀ" } else { "" },
            if *transpose_b { "ᵀ" } else { "" }
        ),
        Step::Gather { .. } => "gather".into(),
        Step::ScatterAdd { .. } => "scatter-add".into(),
        Step::Copy { .. } => "copy".into(),
        Step::Collective { op, .. } => format!("collective {op:?}"),
    }
}

/// The profile as a table, largest total first, with each kind's share.
pub fn profile_report(
    profile: &std::collections::BTreeMap<String, (u64, f64)>,
    top: usize,
) -> String {
    use std::fmt::Write;
    let total: f64 = profile.values().map(|v| v.1).sum();
    let mut kinds: std::collections::BTreeMap<&str, f64> = std::collections::BTreeMap::new();
    for (label, (_, t)) in profile {
        *kinds
            .entry(label.split(' ').next().unwrap_or(""))
            .or_default() += t;
    }
    let mut s = format!("profile: {total:.4} s in steps\n");
    for (k, t) in &kinds {
        writeln!(s, "  {k:12} {t:8.4} s {:5.1} %", 100.0 * t / total).unwrap();
    }
    let mut rows: Vec<(&String, &(u64, f64))> = profile.iter().collect();
    rows.sort_by(|a, b| b.1 .1.total_cmp(&a.1 .1));
    for (label, (n, t)) in rows.into_iter().take(top) {
        writeln!(s, "  {t:8.4} s {:5.1} % {n:5}x  {label}", 100.0 * t / total).unwrap();
    }
    s
}
