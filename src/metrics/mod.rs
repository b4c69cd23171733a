//! Prometheus text exposition (format 0.0.4): a small writer that every
//! layer's counters are rendered with, and the standard `process_*` series.
//!
//! Counters live next to what they count (atomics in `media::stats`,
//! `webhooks`); this module only knows how to write them, so a scrape costs
//! a few loads and one string, never a lock on a hot path.

pub mod process;

use std::fmt::{Display, Write};

/// What a metric family is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up (since the process started); `rate()` works on it.
    Counter,
    /// Goes up and down.
    Gauge,
}

/// A text exposition being written.
#[derive(Debug, Default)]
pub struct Exposition {
    out: String,
}

impl Exposition {
    /// An empty exposition.
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts a family: its `# HELP` and `# TYPE` lines. `help` is one line.
    pub fn family(&mut self, name: &str, kind: Kind, help: &str) -> &mut Self {
        let kind = match kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        };
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(self.out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        self
    }

    /// One sample of the family just started.
    pub fn sample(
        &mut self,
        name: &str,
        labels: &[(&str, &str)],
        value: impl Display,
    ) -> &mut Self {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"{}\"", escape_label(v));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
        self
    }

    /// A family with a single unlabelled sample.
    pub fn single(&mut self, name: &str, kind: Kind, help: &str, value: impl Display) {
        self.family(name, kind, help).sample(name, &[], value);
    }

    /// Appends text that is already in the exposition format.
    pub fn raw(&mut self, text: &str) {
        self.out.push_str(text);
    }

    /// The text.
    pub fn finish(self) -> String {
        self.out
    }
}

/// A label value as the format wants it: `\`, `"` and newlines escaped.
fn escape_label(v: &str) -> std::borrow::Cow<'_, str> {
    if !v.contains(['\\', '"', '\n']) {
        return v.into();
    }
    let mut s = String::with_capacity(v.len() + 4);
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_and_samples() {
        let mut e = Exposition::new();
        e.family("x_total", Kind::Counter, "Things.")
            .sample("x_total", &[("kind", "audio")], 3)
            .sample("x_total", &[("kind", "a\"b\\c\nd"), ("z", "1")], 4);
        e.single("y", Kind::Gauge, "One.", 1.5);
        assert_eq!(
            e.finish(),
            "# HELP x_total Things.\n# TYPE x_total counter\n\
             x_total{kind=\"audio\"} 3\n\
             x_total{kind=\"a\\\"b\\\\c\\nd\",z=\"1\"} 4\n\
             # HELP y One.\n# TYPE y gauge\ny 1.5\n"
        );
    }
}
