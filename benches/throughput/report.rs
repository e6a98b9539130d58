//! The summary table: each figure beside its ceiling, their ratio, the target and whether it
//! was met. Targets are reported, never asserted: these are benchmark figures, not timed tests.

/// What a figure should come to.
#[derive(Clone, Copy, Debug)]
pub enum Target {
    AtLeast(f64),
    AtMost(f64),
}

impl Target {
    fn met(self, got: f64) -> bool {
        match self {
            Target::AtLeast(t) => got >= t,
            Target::AtMost(t) => got <= t,
        }
    }

    fn text(self, unit: &str) -> String {
        match self {
            Target::AtLeast(t) => format!(">= {t}{unit}"),
            Target::AtMost(t) => format!("<= {t}{unit}"),
        }
    }
}

/// One line of the summary.
pub struct Row {
    pub figure: String,
    pub value: String,
    pub ceiling: String,
    pub ratio: Option<f64>,
    /// The target, the number it is judged on (the ratio, or the value itself), and the unit
    /// the target is written in.
    pub check: Option<(Target, f64, &'static str)>,
}

impl Row {
    /// `value` against `ceiling`, judged on their ratio `value / ceiling`.
    pub fn ratio(
        figure: String,
        value: f64,
        ceiling: f64,
        digits: usize,
        target: Option<Target>,
    ) -> Self {
        let ratio = value / ceiling;
        Self {
            figure,
            value: format!("{value:.digits$}"),
            ceiling: format!("{ceiling:.digits$}"),
            ratio: Some(ratio),
            check: target.map(|t| (t, ratio, "")),
        }
    }

    /// As [`Row::ratio`] for a figure where lower is better, judged on `ceiling / value`.
    pub fn inverse_ratio(
        figure: String,
        value: f64,
        ceiling: f64,
        digits: usize,
        target: Option<Target>,
    ) -> Self {
        let ratio = ceiling / value;
        Self {
            ratio: Some(ratio),
            check: target.map(|t| (t, ratio, "")),
            ..Self::ratio(figure, value, ceiling, digits, None)
        }
    }

    /// A figure with no ceiling, perhaps judged on its own value.
    pub fn value(
        figure: String,
        value: String,
        check: Option<(Target, f64, &'static str)>,
    ) -> Self {
        Self {
            figure,
            value,
            ceiling: "-".into(),
            ratio: None,
            check,
        }
    }
}

/// Prints the rows as an aligned table.
pub fn print(rows: &[Row]) {
    let lines: Vec<[String; 6]> = rows
        .iter()
        .map(|r| {
            let (target, verdict) = match r.check {
                Some((t, got, unit)) => (
                    t.text(unit),
                    if t.met(got) { "met" } else { "missed" }.to_owned(),
                ),
                None => ("-".into(), "-".into()),
            };
            [
                r.figure.clone(),
                r.value.clone(),
                r.ceiling.clone(),
                r.ratio.map_or("-".into(), |x| format!("{x:.3}")),
                target,
                verdict,
            ]
        })
        .collect();
    let header = ["figure", "value", "ceiling", "ratio", "target", "met"].map(str::to_owned);
    let widths: Vec<usize> = (0..6)
        .map(|i| {
            lines
                .iter()
                .chain([&header])
                .map(|l| l[i].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    println!("\nsummary");
    for line in [&header].into_iter().chain(&lines) {
        let cells: Vec<String> = line
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(i, (c, w))| {
                if i == 0 {
                    format!("{c:<w$}")
                } else {
                    format!("{c:>w$}")
                }
            })
            .collect();
        println!("  {}", cells.join("  "));
    }
}
