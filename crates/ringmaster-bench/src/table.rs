//! The bench's tables: measured rows with the way that is better, the median and spread
//! (min–max) of several runs, and a column per master with their ratio.

use crate::master::Kind;

/// Which way a figure is better, printed beside every ratio so a table reads on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Better {
    Higher,
    Lower,
    /// A fact about the run (a count of signals sent, a nice value): no better way.
    Neither,
}

impl Better {
    pub fn words(self) -> &'static str {
        match self {
            Better::Higher => "higher is better",
            Better::Lower => "lower is better",
            Better::Neither => "",
        }
    }
}

/// One measured value of one run.
#[derive(Debug, Clone)]
pub struct Row {
    pub name: &'static str,
    pub value: Option<f64>,
    pub better: Better,
}

pub fn row(name: &'static str, value: impl Into<Option<f64>>, better: Better) -> Row {
    Row {
        name,
        value: value.into(),
        better,
    }
}

pub fn fmt_value(v: Option<f64>) -> String {
    match v {
        None => "-".into(),
        Some(v) if v.is_nan() => "-".into(),
        Some(v) if v.fract() == 0.0 && v.abs() < 1e12 => format!("{v:.0}"),
        Some(v) if v.abs() >= 100.0 => format!("{v:.0}"),
        Some(v) => format!("{v:.2}"),
    }
}

/// Median and spread (min, max) of some values; NaN for none.
pub fn median_spread(mut values: Vec<f64>) -> (f64, f64, f64) {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n == 0 {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    let median = if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    };
    (median, values[0], values[n - 1])
}

/// `median [min-max]`, or the bare median when the spread does not show (one run, or all
/// equal as printed).
pub fn fmt_spread(values: Vec<f64>) -> (f64, String) {
    let (m, lo, hi) = median_spread(values);
    let (lo, hi) = (fmt_value(Some(lo)), fmt_value(Some(hi)));
    let text = if lo == hi {
        fmt_value(Some(m))
    } else {
        format!("{} [{lo}-{hi}]", fmt_value(Some(m)))
    };
    (m, text)
}

/// `a / b` with the way that is better, or "-" when it means nothing.
pub fn fmt_ratio(a: f64, b: f64, better: Better) -> String {
    if better == Better::Neither || a.is_nan() || b.is_nan() || b == 0.0 {
        return "-".into();
    }
    format!("{:.2} ({})", a / b, better.words())
}

/// All runs of one master: the rows of each run that succeeded, and the first failure.
pub struct Column {
    pub kind: Kind,
    pub runs: Vec<Vec<Row>>,
    pub error: Option<String>,
    pub tried: u32,
}

/// Print one table: a column per master (median [min-max] over its runs), and
/// ringmaster/other for every other master when ringmaster ran, with which way is better.
pub fn report(title: &str, columns: &[Column]) {
    println!("\n== {title}");
    for c in columns {
        if let Some(e) = &c.error {
            println!(
                "{}: FAILED ({} of {} runs): {e}",
                c.kind.label(),
                c.tried as usize - c.runs.len(),
                c.tried
            );
        }
    }
    let ok: Vec<&Column> = columns.iter().filter(|c| !c.runs.is_empty()).collect();
    let Some(first) = ok.first().and_then(|c| c.runs.first()) else {
        return;
    };
    // Ratios are ringmaster's median over each other master's.
    let base = ok.iter().position(|c| c.kind == Kind::Ringmaster);
    let others: Vec<usize> = match base {
        Some(b) => (0..ok.len()).filter(|&i| i != b).collect(),
        None => Vec::new(),
    };
    let runs: Vec<String> = ok
        .iter()
        .map(|c| format!("{} {}", c.kind.label(), c.runs.len()))
        .collect();
    println!("median [min-max] of the runs ({})", runs.join(", "));
    print!("{:<30}", "");
    for c in &ok {
        print!("{:>26}", c.kind.label());
    }
    for &o in &others {
        print!("  {:<28}", format!("ringmaster/{}", ok[o].kind.label()));
    }
    println!();
    for (i, r) in first.iter().enumerate() {
        print!("{:<30}", r.name);
        let mut medians = Vec::new();
        for c in &ok {
            let values = c
                .runs
                .iter()
                .filter_map(|run| run.get(i).and_then(|r| r.value))
                .collect();
            let (m, text) = fmt_spread(values);
            medians.push(m);
            print!("{text:>26}");
        }
        if let Some(b) = base {
            for &o in &others {
                print!("  {:<28}", fmt_ratio(medians[b], medians[o], r.better));
            }
        }
        println!();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_spread() {
        assert_eq!(median_spread(vec![3.0, 1.0, 2.0]), (2.0, 1.0, 3.0));
        assert_eq!(median_spread(vec![4.0, 1.0, 2.0, 3.0]), (2.5, 1.0, 4.0));
        assert!(median_spread(Vec::new()).0.is_nan());
    }

    #[test]
    fn spread_is_shown_only_when_there_is_one() {
        assert_eq!(fmt_spread(vec![5.0]).1, "5");
        assert_eq!(fmt_spread(vec![5.0, 5.0]).1, "5");
        assert_eq!(fmt_spread(vec![0.211, 0.212]).1, "0.21");
        assert_eq!(fmt_spread(vec![1.0, 5.0, 2.0]).1, "2 [1-5]");
        assert_eq!(fmt_spread(Vec::new()).1, "-");
    }

    #[test]
    fn every_ratio_says_which_way_is_better() {
        assert_eq!(fmt_ratio(1.0, 2.0, Better::Lower), "0.50 (lower is better)");
        assert_eq!(
            fmt_ratio(3.0, 2.0, Better::Higher),
            "1.50 (higher is better)"
        );
        assert_eq!(fmt_ratio(3.0, 2.0, Better::Neither), "-");
        assert_eq!(fmt_ratio(3.0, 0.0, Better::Lower), "-");
    }
}
