//! The one rule for each numeric option, shared by the command line (clap value parsers in
//! [`parse`]) and recipes, so a value is refused at parse time with the same words everywhere
//! and nothing is silently clamped: one row per quantity.

macro_rules! rules {
    ($( $(#[$doc:meta])* $name:ident : $t:ty = |$v:ident| $ok:expr, $expect:literal; )*) => {
        $(
            $(#[$doc])*
            pub fn $name($v: $t) -> Result<$t, String> {
                if $ok {
                    Ok($v)
                } else {
                    Err(format!("{} is not {}", $v, $expect))
                }
            }
        )*

        /// The same rules on command-line text (for clap's `value_parser`).
        pub mod parse {
            $(
                pub fn $name(s: &str) -> Result<$t, String> {
                    let v: $t = s
                        .trim()
                        .parse()
                        .map_err(|_| format!("`{s}` is not {}", $expect))?;
                    super::$name(v)
                }
            )*
        }
    };
}

rules! {
    /// Tokens per evaluation chunk (the second half is scored).
    eval_ctx: usize = |v| v >= 4 && v.is_multiple_of(2), "an even number of tokens of at least 4";
    /// Tokens per calibration or training sequence.
    seq_ctx: usize = |v| v >= 2, "a number of tokens of at least 2";
    /// A count of chunks, sequences, tokens, prompts, repeats.
    count: usize = |v| v >= 1, "at least 1";
    /// GPTQ and SparseGPT dampening: a fraction of the mean diagonal of XᵀX.
    damp: f64 = |v| v.is_finite() && v > 0.0 && v <= 1.0, "a dampening fraction in (0, 1]";
    /// The fraction of weights, neurons, heads or blocks removed.
    sparsity: f64 = |v| v > 0.0 && v < 1.0, "a fraction strictly between 0 and 1";
    /// A learning rate.
    lr: f64 = |v| v.is_finite() && v > 0.0, "a positive, finite learning rate";
    /// The distillation weight α.
    alpha: f64 = |v| (0.0..=1.0).contains(&v), "a weight between 0 and 1";
    /// Bits per weight of a size budget.
    bpw: f64 = |v| (2.0..=32.0).contains(&v), "a number of bits per weight between 2 and 32";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_rule_for_text_and_numbers() {
        assert_eq!(parse::eval_ctx("512"), Ok(512));
        for bad in ["0", "3", "511", "-1", "x"] {
            let e = parse::eval_ctx(bad).unwrap_err();
            assert!(e.contains("even number of tokens"), "{bad}: {e}");
        }
        assert_eq!(eval_ctx(7).unwrap_err(), parse::eval_ctx("7").unwrap_err());
        assert!(count(0).is_err() && count(1).is_ok());
        assert!(damp(0.0).is_err() && damp(f64::NAN).is_err() && damp(0.01).is_ok());
        assert!(sparsity(1.0).is_err() && sparsity(0.5).is_ok());
        assert!(parse::bpw("1.5").is_err() && parse::bpw("4.5").is_ok());
        assert!(parse::lr("inf").is_err() && alpha(1.5).is_err());
    }
}

/// Options whose values come from a name table (a clap `ValueEnum` in the library that owns
/// the concept, the same names serde reads in recipes and writes in reports): one lookup,
/// whose message names what is unknown and lists the table.
pub mod names {
    use clap::ValueEnum;

    /// Every name of `E`, as `a, b or c`.
    pub fn list<E: ValueEnum>() -> String {
        let names: Vec<String> = E::value_variants()
            .iter()
            .filter_map(|v| v.to_possible_value().map(|p| p.get_name().to_string()))
            .collect();
        match names.split_last() {
            Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
            _ => names.join(""),
        }
    }

    /// `s` looked up in `E`'s names; `what` names the option in the message.
    pub fn lookup<E: ValueEnum>(s: &str, what: &str) -> Result<E, String> {
        E::from_str(s, false).map_err(|_| format!("unknown {what} `{s}` ({})", list::<E>()))
    }

    /// `--data`.
    pub fn dataset(s: &str) -> Result<crate::data::Dataset, String> {
        lookup(s, "data set")
    }

    /// `--arch`.
    pub fn arch(s: &str) -> Result<crate::classifier::Arch, String> {
        lookup(s, "architecture")
    }

    /// `--objective`.
    pub fn objective(s: &str) -> Result<crate::tune::Objective, String> {
        lookup(s, "objective")
    }
}
