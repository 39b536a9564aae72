//! Reading a Prometheus text exposition (a `/metrics` body) as tests and benchmarks check
//! it: the sum of one metric's samples whose labels include the given ones.

/// Sums the samples of metric `name` in `text` whose labels include every `(label, value)`
/// of `labels` (with none, every sample of `name`). Comments, other metrics and samples
/// whose value is not a number are skipped.
pub fn sum(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter_map(|line| {
            let (series, value) = line.strip_prefix(name)?.rsplit_once(' ')?;
            if !(series.is_empty() || series.starts_with('{')) {
                return None; // another metric whose name starts with `name`
            }
            let has = |(label, v): &(&str, &str)| series.contains(&format!("{label}=\"{v}\""));
            labels.iter().all(has).then_some(())?;
            value.parse::<f64>().ok()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::sum;

    const TEXT: &str = "\
# HELP req_total Requests.
# TYPE req_total counter
req_total{route=\"/a\",method=\"GET\"} 3
req_total{route=\"/a\",method=\"PUT\"} 4
req_total{route=\"/b\",method=\"GET\"} 5
req_total_created{route=\"/a\",method=\"GET\"} 1700000000
relists_total 2
";

    #[test]
    fn sums_the_samples_whose_labels_match() {
        assert_eq!(
            sum(TEXT, "req_total", &[("route", "/a"), ("method", "GET")]),
            3.0
        );
        assert_eq!(sum(TEXT, "req_total", &[("method", "GET")]), 8.0);
        assert_eq!(sum(TEXT, "req_total", &[]), 12.0);
        assert_eq!(sum(TEXT, "relists_total", &[]), 2.0);
        assert_eq!(sum(TEXT, "missing_total", &[]), 0.0);
    }
}
