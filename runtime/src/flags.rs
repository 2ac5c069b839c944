//! Value parsers for numeric command-line flags: every number a user gives is checked when it
//! is parsed (finite, in range), and the error says the range, so no NaN learning rate or zero
//! step count reaches a training loop.

/// A count of at least 1 (steps, epochs, checkpoints).
pub fn positive_count(s: &str) -> Result<u64, String> {
    match s.trim().parse::<u64>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("expected a whole number >= 1, found '{s}'")),
    }
}

/// [`positive_count`] as a `usize`.
pub fn positive_usize(s: &str) -> Result<usize, String> {
    let n = positive_count(s)?;
    usize::try_from(n).map_err(|_| format!("{n} is too large"))
}

fn finite(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("expected a number, found '{s}'"))?;
    if v.is_finite() {
        Ok(v)
    } else {
        Err(format!("must be a finite number, found {s}"))
    }
}

/// A number in (0, f32::MAX]: learning rates and loss scales, which the graphs hold as f32.
pub fn positive_f32_range(s: &str) -> Result<f64, String> {
    let v = finite(s)?;
    if v > 0.0 && v <= f32::MAX as f64 {
        Ok(v)
    } else {
        Err(format!("must be in (0, 3.4e38], found {v}"))
    }
}

/// A learning rate: a number in (0, 1] (an Adam learning rate above 1 is always a typo).
pub fn learning_rate(s: &str) -> Result<f64, String> {
    let v = finite(s)?;
    if v > 0.0 && v <= 1.0 {
        Ok(v)
    } else {
        Err(format!("must be in (0, 1], found {v}"))
    }
}

/// The most tokens a row may have (far above any BERT's 512 positions; bounds the buffers).
pub const MAX_SEQ_LENGTH: usize = 1 << 16;

/// A sequence length: a whole number in 1..=65536.
pub fn seq_length(s: &str) -> Result<usize, String> {
    let n = positive_usize(s)?;
    if n > MAX_SEQ_LENGTH {
        return Err(format!("must be at most {MAX_SEQ_LENGTH}, found {n}"));
    }
    Ok(n)
}

/// A step counter: a whole number in 0..=2^31-1 (the graphs hold it as i32).
pub fn step_counter(s: &str) -> Result<i32, String> {
    match s.trim().parse::<i32>() {
        Ok(n) if n >= 0 => Ok(n),
        _ => Err(format!(
            "expected a whole number in 0..=2147483647, found '{s}'"
        )),
    }
}

/// A finite number >= 0 (warmup steps).
pub fn non_negative(s: &str) -> Result<f64, String> {
    let v = finite(s)?;
    if v >= 0.0 {
        Ok(v)
    } else {
        Err(format!("must be >= 0, found {v}"))
    }
}

/// A number > 0, `inf` allowed (decay steps: `inf` or a huge value means no decay).
pub fn positive_or_inf(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("expected a number, found '{s}'"))?;
    if v > 0.0 {
        Ok(v)
    } else {
        Err(format!("must be > 0, found {v}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_parser_refuses_what_is_out_of_its_range_and_says_the_range() {
        assert_eq!(positive_count("3"), Ok(3));
        assert!(positive_count("0").unwrap_err().contains("at least 1"));
        assert!(positive_count("-1").unwrap_err().contains(">= 1"));
        assert!(positive_count("18446744073709551616").is_err());
        assert_eq!(positive_f32_range("5e-5"), Ok(5e-5));
        for bad in ["nan", "inf", "-inf", "0", "-1e-5", "1e39", "abc"] {
            assert!(positive_f32_range(bad).is_err(), "{bad}");
        }
        assert!(positive_f32_range("nan").unwrap_err().contains("finite"));
        assert!(positive_f32_range("0").unwrap_err().contains("(0, 3.4e38]"));
        assert_eq!(seq_length("128"), Ok(128));
        assert!(seq_length("4611686018427387904")
            .unwrap_err()
            .contains("at most 65536"));
        assert_eq!(step_counter("0"), Ok(0));
        assert!(step_counter("-1").is_err() && step_counter("2147483648").is_err());
        assert_eq!(learning_rate("5e-5"), Ok(5e-5));
        assert!(learning_rate("5e5").unwrap_err().contains("(0, 1]"));
        assert_eq!(non_negative("0"), Ok(0.0));
        assert!(non_negative("-1").is_err() && non_negative("nan").is_err());
        assert_eq!(positive_or_inf("inf"), Ok(f64::INFINITY));
        assert!(positive_or_inf("0").is_err() && positive_or_inf("nan").is_err());
    }
}
