//! Metrics plugins define through the WIT `metrics` interface, exported beside the
//! gateway's own as `wasmgate_custom_<plugin>_<name>{route, <labels>}`.
//!
//! Everything a plugin sends is bounded by the host: the number of metrics per plugin, of
//! labels per metric, of label-value combinations per metric ([`MAX_SERIES`]), the length
//! of names and values. Definitions are kept for the process's life (across reloads
//! and plugin updates), so a series never disappears between scrapes.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;

/// Label-value combinations one metric may hold.
pub const MAX_SERIES: usize = 100;
/// Metrics one plugin may define.
pub const MAX_METRICS_PER_PLUGIN: usize = 32;
/// Labels one metric may have (besides `route`).
pub const MAX_LABELS: usize = 8;
/// Buckets a histogram may have.
pub const MAX_BUCKETS: usize = 20;
/// Bytes of one label value.
pub const MAX_LABEL_VALUE: usize = 128;
/// Bytes of a metric's help text.
const MAX_HELP: usize = 256;
/// Buckets of a histogram defined without any (seconds, as the gateway's latencies).
const DEFAULT_BUCKETS: [f64; 11] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
];

/// A label set: `route`, then the definition's labels, in order.
type Labels = Vec<(String, String)>;

/// A metric's kind, as defined.
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    /// A counter.
    Counter,
    /// A histogram with these upper bounds.
    Histogram(Vec<f64>),
}

/// What a plugin asked to define.
#[derive(Debug, Clone, PartialEq)]
pub struct Definition {
    /// The metric's name (without prefix).
    pub name: String,
    /// Its help text.
    pub help: String,
    /// Its kind.
    pub kind: Kind,
    /// Its label names.
    pub labels: Vec<String>,
}

/// Why a plugin's metric call was refused (the plugin gets the text).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refused(String);

enum Series {
    Counter(Family<Labels, Counter>),
    Histogram(Family<Labels, Histogram, Box<dyn Fn() -> Histogram + Send + Sync>>),
}

struct Metric {
    definition: Definition,
    /// The exported name, with the prefix.
    full_name: String,
    series: Series,
    /// Label-value combinations created so far.
    created: AtomicUsize,
    /// Serializes the creation of new combinations, so the cap is exact.
    creating: Mutex<()>,
}

/// Every plugin-defined metric, registered once as a collector of the gateway's registry.
pub struct CustomMetrics {
    max_series: usize,
    metrics: RwLock<BTreeMap<(String, String), Arc<Metric>>>,
}

impl std::fmt::Debug for CustomMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CustomMetrics").finish_non_exhaustive()
    }
}

impl CustomMetrics {
    /// An empty set whose metrics hold at most `max_series` label-value combinations each.
    pub fn new(max_series: usize) -> Self {
        Self {
            max_series,
            metrics: RwLock::new(BTreeMap::new()),
        }
    }

    /// Defines `definition` for `plugin`; the same definition again is a no-op.
    pub fn define(&self, plugin: &str, definition: Definition) -> Result<(), Refused> {
        check_definition(&definition)?;
        let key = (plugin.to_string(), definition.name.clone());
        if let Some(existing) = self.metrics.read().expect("metrics lock").get(&key) {
            return same(existing, &definition);
        }
        let mut metrics = self.metrics.write().expect("metrics lock");
        if let Some(existing) = metrics.get(&key) {
            return same(existing, &definition);
        }
        if metrics.keys().filter(|(p, _)| p == plugin).count() >= MAX_METRICS_PER_PLUGIN {
            return Err(Refused(format!(
                "a plugin may define at most {MAX_METRICS_PER_PLUGIN} metrics"
            )));
        }
        let series = match &definition.kind {
            Kind::Counter => Series::Counter(Family::default()),
            Kind::Histogram(buckets) => {
                let buckets = if buckets.is_empty() {
                    DEFAULT_BUCKETS.to_vec()
                } else {
                    buckets.clone()
                };
                Series::Histogram(Family::new_with_constructor(Box::new(move || {
                    Histogram::new(buckets.clone())
                })))
            }
        };
        let full_name = format!("custom_{}_{}", plugin.replace('-', "_"), definition.name);
        metrics.insert(
            key,
            Arc::new(Metric {
                definition,
                full_name,
                series,
                created: AtomicUsize::new(0),
                creating: Mutex::new(()),
            }),
        );
        Ok(())
    }

    /// Adds `delta` to `plugin`'s counter `name` for `route`.
    pub fn add(
        &self,
        plugin: &str,
        route: &str,
        name: &str,
        values: Vec<String>,
        delta: u64,
    ) -> Result<(), Refused> {
        let metric = self.metric(plugin, name)?;
        let Series::Counter(family) = &metric.series else {
            return Err(Refused(format!("`{name}` is not a counter")));
        };
        let labels = self.labels(&metric, family_has(family), route, values)?;
        family.get_or_create(&labels).inc_by(delta);
        Ok(())
    }

    /// Records `value` in `plugin`'s histogram `name` for `route`.
    pub fn observe(
        &self,
        plugin: &str,
        route: &str,
        name: &str,
        values: Vec<String>,
        value: f64,
    ) -> Result<(), Refused> {
        let metric = self.metric(plugin, name)?;
        let Series::Histogram(family) = &metric.series else {
            return Err(Refused(format!("`{name}` is not a histogram")));
        };
        if !value.is_finite() {
            return Err(Refused("the value must be a finite number".into()));
        }
        let labels = self.labels(&metric, family_has(family), route, values)?;
        family.get_or_create(&labels).observe(value);
        Ok(())
    }

    fn metric(&self, plugin: &str, name: &str) -> Result<Arc<Metric>, Refused> {
        self.metrics
            .read()
            .expect("metrics lock")
            .get(&(plugin.to_string(), name.to_string()))
            .cloned()
            .ok_or_else(|| Refused(format!("metric `{name}` is not defined")))
    }

    /// The label set for `values`, counting it against the metric's cap when it is new.
    fn labels(
        &self,
        metric: &Metric,
        exists: impl Fn(&Labels) -> bool,
        route: &str,
        values: Vec<String>,
    ) -> Result<Labels, Refused> {
        let names = &metric.definition.labels;
        if values.len() != names.len() {
            return Err(Refused(format!(
                "`{}` has {} labels, got {} values",
                metric.definition.name,
                names.len(),
                values.len()
            )));
        }
        if let Some(bad) = values
            .iter()
            .find(|v| v.len() > MAX_LABEL_VALUE || v.chars().any(char::is_control))
        {
            return Err(Refused(format!(
                "label value `{}` is longer than {MAX_LABEL_VALUE} bytes or has control characters",
                crate::text::escape_control(&crate::text::bounded(bad, 64))
            )));
        }
        let labels: Labels = std::iter::once(("route".to_string(), route.to_string()))
            .chain(names.iter().cloned().zip(values))
            .collect();
        if exists(&labels) {
            return Ok(labels);
        }
        let _creating = metric.creating.lock().expect("creation lock");
        if exists(&labels) {
            return Ok(labels);
        }
        if metric.created.load(Ordering::Relaxed) >= self.max_series {
            return Err(Refused(format!(
                "`{}` already has the most label-value combinations a metric may hold ({})",
                metric.definition.name, self.max_series
            )));
        }
        metric.created.fetch_add(1, Ordering::Relaxed);
        Ok(labels)
    }
}

/// Whether `family` already has a series for a label set.
fn family_has<M, C>(family: &Family<Labels, M, C>) -> impl Fn(&Labels) -> bool + '_
where
    C: prometheus_client::metrics::family::MetricConstructor<M>,
{
    move |labels| family.get(labels).is_some()
}

fn same(existing: &Metric, definition: &Definition) -> Result<(), Refused> {
    if existing.definition == *definition {
        Ok(())
    } else {
        Err(Refused(format!(
            "metric `{}` is already defined differently",
            definition.name
        )))
    }
}

/// Whether `name` is a valid metric or label name.
fn is_name(name: &str) -> bool {
    let mut chars = name.chars();
    (1..=64).contains(&name.len())
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with("__")
}

fn check_definition(definition: &Definition) -> Result<(), Refused> {
    let name = &definition.name;
    if !is_name(name) {
        return Err(Refused(format!(
            "`{}` is not a metric name: 1-64 characters from a-z A-Z 0-9 _, not starting with a digit or __",
            crate::text::escape_control(&crate::text::bounded(name, 64))
        )));
    }
    if definition.help.len() > MAX_HELP || definition.help.chars().any(char::is_control) {
        return Err(Refused(format!(
            "the help text must be at most {MAX_HELP} bytes without control characters"
        )));
    }
    if definition.labels.len() > MAX_LABELS {
        return Err(Refused(format!(
            "a metric may have at most {MAX_LABELS} labels"
        )));
    }
    for (i, label) in definition.labels.iter().enumerate() {
        if !is_name(label) || label == "route" || definition.labels[..i].contains(label) {
            return Err(Refused(format!(
                "`{}` is not a usable label name (valid, unique, and not `route`)",
                crate::text::escape_control(&crate::text::bounded(label, 64))
            )));
        }
    }
    if let Kind::Histogram(buckets) = &definition.kind {
        let ascending = buckets.windows(2).all(|w| w[0] < w[1]);
        if buckets.len() > MAX_BUCKETS || !ascending || buckets.iter().any(|b| !b.is_finite()) {
            return Err(Refused(format!(
                "histogram buckets must be at most {MAX_BUCKETS} finite, ascending bounds"
            )));
        }
    }
    Ok(())
}

/// Encodes every plugin-defined metric at scrape time.
#[derive(Debug)]
pub struct CustomCollector(pub Arc<CustomMetrics>);

impl Collector for CustomCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let metrics: Vec<Arc<Metric>> = self
            .0
            .metrics
            .read()
            .expect("metrics lock")
            .values()
            .cloned()
            .collect();
        for metric in metrics {
            let help = &metric.definition.help;
            match &metric.series {
                Series::Counter(family) => {
                    let descriptor = encoder.encode_descriptor(
                        &metric.full_name,
                        help,
                        None,
                        family.metric_type(),
                    )?;
                    family.encode(descriptor)?;
                }
                Series::Histogram(family) => {
                    let descriptor = encoder.encode_descriptor(
                        &metric.full_name,
                        help,
                        None,
                        family.metric_type(),
                    )?;
                    family.encode(descriptor)?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counter(name: &str, labels: &[&str]) -> Definition {
        Definition {
            name: name.into(),
            help: "help".into(),
            kind: Kind::Counter,
            labels: labels.iter().map(|l| l.to_string()).collect(),
        }
    }

    #[test]
    fn definitions_are_checked_and_fixed() {
        let metrics = CustomMetrics::new(10);
        assert!(metrics.define("p", counter("logins", &["result"])).is_ok());
        assert!(metrics.define("p", counter("logins", &["result"])).is_ok());
        assert!(metrics.define("p", counter("logins", &["other"])).is_err());
        assert!(metrics.define("p", counter("1bad", &[])).is_err());
        assert!(metrics.define("p", counter("ok", &["route"])).is_err());
        assert!(metrics.define("p", counter("ok", &["a", "a"])).is_err());
        let descending = Definition {
            kind: Kind::Histogram(vec![2.0, 1.0]),
            ..counter("h", &[])
        };
        assert!(metrics.define("p", descending).is_err());
    }

    #[test]
    fn label_combinations_are_capped_per_metric() {
        let metrics = CustomMetrics::new(3);
        metrics.define("p", counter("hits", &["user"])).unwrap();
        for user in ["a", "b", "c"] {
            metrics.add("p", "r", "hits", vec![user.into()], 1).unwrap();
        }
        // Known combinations keep counting; a fourth is refused.
        metrics.add("p", "r", "hits", vec!["a".into()], 1).unwrap();
        let refused = metrics.add("p", "r", "hits", vec!["d".into()], 1);
        assert!(
            refused
                .unwrap_err()
                .0
                .contains("most label-value combinations")
        );
        assert!(
            metrics
                .add("p", "r", "hits", vec!["x\ny".into()], 1)
                .is_err()
        );
        assert!(metrics.add("p", "r", "hits", vec![], 1).is_err());
        assert!(metrics.add("p", "r", "nope", vec![], 1).is_err());
    }
}
