//! Statistics and the final table.

use serde_json::{json, Value};

pub fn median(v: &[f64]) -> f64 {
    let mut s: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if s.is_empty() {
        return f64::NAN;
    }
    s.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let m = s.len() / 2;
    if s.len() % 2 == 1 {
        s[m]
    } else {
        (s[m - 1] + s[m]) / 2.0
    }
}

pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// A line of the final table.
pub struct Row {
    pub metric: String,
    pub unit: &'static str,
    pub direct: Option<f64>,
    pub proxied: f64,
    /// How `ok` is judged: (ratio or absolute, bound, at least?) — see `judge`.
    pub target: Option<Target>,
}

#[derive(Clone, Copy)]
pub enum Target {
    RatioAtLeast(f64),
    RatioAtMost(f64),
    AtMost(f64),
}

impl Row {
    pub fn ratio(&self) -> Option<f64> {
        self.direct.map(|d| self.proxied / d)
    }

    pub fn ok(&self) -> Option<bool> {
        Some(match self.target? {
            Target::RatioAtLeast(x) => self.ratio()? >= x,
            Target::RatioAtMost(x) => self.ratio()? <= x,
            Target::AtMost(x) => self.proxied <= x,
        })
    }

    pub fn target_text(&self) -> String {
        match self.target {
            None => String::new(),
            Some(Target::RatioAtLeast(x)) => format!(">= {x:.2}x"),
            Some(Target::RatioAtMost(x)) => format!("<= {x:.2}x"),
            Some(Target::AtMost(x)) => format!("<= {x} {}", self.unit),
        }
    }
}

pub fn fmt(x: f64) -> String {
    if !x.is_finite() {
        "-".into()
    } else if x.abs() >= 100.0 {
        format!("{x:.0}")
    } else if x.abs() >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

pub fn table(rows: &[Row]) -> String {
    let mut out = String::new();
    let header = format!(
        "{:<46} {:>10} {:>10} {:>7}  {:<12} {}",
        "metric", "direct", "proxied", "ratio", "target", "ok"
    );
    out += &header;
    out.push('\n');
    out += &"-".repeat(header.len() + 2);
    out.push('\n');
    for r in rows {
        let metric = format!("{} [{}]", r.metric, r.unit);
        out += &format!(
            "{:<46} {:>10} {:>10} {:>7}  {:<12} {}\n",
            metric,
            r.direct.map(fmt).unwrap_or_else(|| "-".into()),
            fmt(r.proxied),
            r.ratio()
                .map(|x| format!("{x:.2}x"))
                .unwrap_or_else(|| "-".into()),
            r.target_text(),
            match r.ok() {
                Some(true) => "yes",
                Some(false) => "MISS",
                None => "",
            }
        );
    }
    out
}

pub fn rows_json(rows: &[Row]) -> Value {
    let rows: Vec<Value> = rows
        .iter()
        .map(|r| {
            json!({
                "metric": r.metric, "unit": r.unit, "direct": r.direct, "proxied": r.proxied,
                "ratio": r.ratio(), "target": r.target_text(), "ok": r.ok(),
            })
        })
        .collect();
    Value::Array(rows)
}
