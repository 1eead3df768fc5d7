//! Prometheus metrics for the services: counters, gauges and histograms with labels, rendered in
//! the text exposition format (version 0.0.4) that Prometheus scrapes from `/metrics`.
//!
//! Updates take one short lock; the services update a metric per chunk, insert or request,
//! rates at which that costs nothing measurable.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

/// The media type of [`Metrics::render`]'s text, for the `Content-Type` of `/metrics`.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Bucket bounds, in seconds, for latencies from a millisecond to ten minutes.
pub const SECONDS_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    300.0, 600.0,
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

#[derive(Debug)]
enum Series {
    Value(f64),
    Histogram {
        bounds: &'static [f64],
        counts: Vec<u64>,
        sum: f64,
        count: u64,
    },
}

#[derive(Debug)]
struct Family {
    help: &'static str,
    kind: Kind,
    /// By rendered label set (`a="x",b="y"`).
    series: BTreeMap<String, Series>,
}

/// A registry of metric families.
#[derive(Debug, Default)]
pub struct Metrics {
    families: Mutex<BTreeMap<&'static str, Family>>,
}

impl Metrics {
    pub fn new() -> Self {
        Self::default()
    }

    fn with_series(
        &self,
        name: &'static str,
        help: &'static str,
        kind: Kind,
        labels: &[(&str, &str)],
        new: impl FnOnce() -> Series,
        update: impl FnOnce(&mut Series),
    ) {
        let mut families = self.families.lock().unwrap_or_else(|p| p.into_inner());
        let family = families.entry(name).or_insert_with(|| Family {
            help,
            kind,
            series: BTreeMap::new(),
        });
        debug_assert_eq!(family.kind, kind, "{name} used as two kinds of metric");
        update(
            family
                .series
                .entry(render_labels(labels))
                .or_insert_with(new),
        );
    }

    /// Adds `by` to a counter.
    pub fn inc(&self, name: &'static str, help: &'static str, labels: &[(&str, &str)], by: f64) {
        self.with_series(
            name,
            help,
            Kind::Counter,
            labels,
            || Series::Value(0.0),
            |s| {
                if let Series::Value(v) = s {
                    *v += by;
                }
            },
        );
    }

    /// Sets a gauge.
    pub fn set(&self, name: &'static str, help: &'static str, labels: &[(&str, &str)], value: f64) {
        self.with_series(
            name,
            help,
            Kind::Gauge,
            labels,
            || Series::Value(0.0),
            |s| *s = Series::Value(value),
        );
    }

    /// Adds `by` (which may be negative) to a gauge.
    pub fn add(&self, name: &'static str, help: &'static str, labels: &[(&str, &str)], by: f64) {
        self.with_series(
            name,
            help,
            Kind::Gauge,
            labels,
            || Series::Value(0.0),
            |s| {
                if let Series::Value(v) = s {
                    *v += by;
                }
            },
        );
    }

    /// Records one observation (e.g. a latency in seconds) in a histogram with `bounds`.
    pub fn observe(
        &self,
        name: &'static str,
        help: &'static str,
        labels: &[(&str, &str)],
        bounds: &'static [f64],
        value: f64,
    ) {
        self.with_series(
            name,
            help,
            Kind::Histogram,
            labels,
            || Series::Histogram {
                bounds,
                counts: vec![0; bounds.len()],
                sum: 0.0,
                count: 0,
            },
            |s| {
                if let Series::Histogram {
                    bounds,
                    counts,
                    sum,
                    count,
                } = s
                {
                    for (bound, c) in bounds.iter().zip(counts.iter_mut()) {
                        if value <= *bound {
                            *c += 1;
                        }
                    }
                    *sum += value;
                    *count += 1;
                }
            },
        );
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let families = self.families.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = String::new();
        for (name, family) in families.iter() {
            let kind = match family.kind {
                Kind::Counter => "counter",
                Kind::Gauge => "gauge",
                Kind::Histogram => "histogram",
            };
            let _ = writeln!(out, "# HELP {name} {}", family.help);
            let _ = writeln!(out, "# TYPE {name} {kind}");
            for (labels, series) in &family.series {
                match series {
                    Series::Value(v) => {
                        let _ = writeln!(out, "{name}{} {}", braced(labels, ""), number(*v));
                    }
                    Series::Histogram {
                        bounds,
                        counts,
                        sum,
                        count,
                    } => {
                        for (bound, c) in bounds.iter().zip(counts) {
                            let le = format!("le=\"{}\"", number(*bound));
                            let _ = writeln!(out, "{name}_bucket{} {c}", braced(labels, &le));
                        }
                        let _ = writeln!(
                            out,
                            "{name}_bucket{} {count}",
                            braced(labels, "le=\"+Inf\"")
                        );
                        let _ = writeln!(out, "{name}_sum{} {}", braced(labels, ""), number(*sum));
                        let _ = writeln!(out, "{name}_count{} {count}", braced(labels, ""));
                    }
                }
            }
        }
        out
    }
}

fn render_labels(labels: &[(&str, &str)]) -> String {
    let mut out = String::new();
    for (i, (k, v)) in labels.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(k);
        out.push_str("=\"");
        for c in v.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '"' => out.push_str("\\\""),
                '\n' => out.push_str("\\n"),
                c => out.push(c),
            }
        }
        out.push('"');
    }
    out
}

fn braced(labels: &str, extra: &str) -> String {
    match (labels.is_empty(), extra.is_empty()) {
        (true, true) => String::new(),
        (true, false) => format!("{{{extra}}}"),
        (false, true) => format!("{{{labels}}}"),
        (false, false) => format!("{{{labels},{extra}}}"),
    }
}

fn number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_text_format() {
        let m = Metrics::new();
        m.inc(
            "t_requests_total",
            "Requests.",
            &[("route", "/a"), ("status", "200")],
            1.0,
        );
        m.inc(
            "t_requests_total",
            "Requests.",
            &[("route", "/a"), ("status", "200")],
            2.0,
        );
        m.set("t_depth", "Depth.", &[], 5.0);
        m.add("t_depth", "Depth.", &[], -2.0);
        m.observe(
            "t_seconds",
            "Latency.",
            &[("route", "q\"x")],
            &[0.1, 1.0],
            0.5,
        );
        m.observe(
            "t_seconds",
            "Latency.",
            &[("route", "q\"x")],
            &[0.1, 1.0],
            0.05,
        );
        let text = m.render();
        assert!(
            text.contains(
                "# TYPE t_requests_total counter\nt_requests_total{route=\"/a\",status=\"200\"} 3\n"
            ),
            "{text}"
        );
        assert!(text.contains("# TYPE t_depth gauge\nt_depth 3\n"), "{text}");
        assert!(
            text.contains("t_seconds_bucket{route=\"q\\\"x\",le=\"0.1\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("t_seconds_bucket{route=\"q\\\"x\",le=\"1\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("t_seconds_bucket{route=\"q\\\"x\",le=\"+Inf\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("t_seconds_sum{route=\"q\\\"x\"} 0.55"),
            "{text}"
        );
        assert!(
            text.contains("t_seconds_count{route=\"q\\\"x\"} 2\n"),
            "{text}"
        );
    }
}
