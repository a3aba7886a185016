//! The pure part of scheduling: which candidates match an application's
//! constraints and which of them wins. No I/O, so it is what a custom
//! scheduler can reuse and what the benchmark measures.
//!
//! A [`Candidate`] is a cluster (or a cloud an application may get a new
//! cluster on) as the scheduler sees it at one moment: its effective labels
//! (its own plus those inherited from its cloud), its custom resources and
//! its fetched, normalized metrics.
//!
//! # Score (Krake's, section 4.2 of the reference)
//!
//! ```text
//! score = (Σ normalized_i · weight_i + sticky_value · sticky_weight)
//!       / (Σ weight_i + sticky_weight)
//! ```
//!
//! where `sticky_value` is 1 and `sticky_weight` is the `stickiness` setting
//! for the candidate the application is scheduled to now, both 0 for the
//! others. A candidate without metrics scores `sticky_value · sticky_weight`.
//! Candidates whose metrics were all fetched are preferred: if any matches,
//! only they are ranked; otherwise every match is ranked without metrics.
//! The highest score wins; ties are broken at random, preferring clusters
//! over clouds.
//!
//! # Metric constraints
//!
//! A metric constraint (`load < 0.5`) compares the metric's **value** as the
//! provider reported it. Krake compares `weight × normalized value` instead
//! (a quirk: with weight 10 and range 0..100, a load of 5 % is compared as
//! 0.5); krake-rs does not copy that. A metric the candidate does not have
//! (or could not fetch) never matches.

use std::collections::HashMap;

use krake_data::constraints::LabelOperator;
use krake_data::kinds::kubernetes::ClusterConstraints;
use krake_data::metadata::Labels;
use krake_data::{LabelConstraint, MetricConstraint, ResourceRef};

/// One fetched metric of a candidate.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricValue {
    /// The metric's name (the `MetricRef` name).
    pub name: String,
    /// Its weight in the score.
    pub weight: f64,
    /// The value the provider reported.
    pub value: f64,
    /// The value scaled into `[0, 1]` by the metric's `min` and `max`.
    pub normalized: f64,
}

/// Whether a candidate is an existing cluster or a cloud a cluster could be
/// created on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CandidateKind {
    /// An existing cluster.
    Cluster,
    /// A cloud (for `auto_cluster_create`).
    Cloud,
}

/// A cluster or cloud as the scheduler sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    /// The object.
    pub target: ResourceRef,
    /// Cluster or cloud.
    pub kind: CandidateKind,
    /// Its labels, with the inherited ones.
    pub labels: Labels,
    /// The custom resources it supports (clouds: none).
    pub custom_resources: Vec<String>,
    /// Its metrics; empty when it has none or fetching one failed.
    pub metrics: Vec<MetricValue>,
    /// True when it has metrics and all of them were fetched.
    pub has_metrics: bool,
    /// `Σ normalized · weight` over `metrics`.
    weighted_sum: f64,
    /// `Σ weight` over `metrics`.
    weight_total: f64,
}

impl Candidate {
    /// A candidate with these labels and custom resources, and no metrics.
    pub fn new(
        target: ResourceRef,
        kind: CandidateKind,
        labels: Labels,
        custom_resources: Vec<String>,
    ) -> Self {
        Candidate {
            target,
            kind,
            labels,
            custom_resources,
            metrics: Vec::new(),
            has_metrics: false,
            weighted_sum: 0.0,
            weight_total: 0.0,
        }
    }

    /// Sets the fetched metrics (all of the candidate's metrics, fetched
    /// without failure).
    #[must_use]
    pub fn with_metrics(mut self, metrics: Vec<MetricValue>) -> Self {
        self.weighted_sum = metrics.iter().map(|m| m.normalized * m.weight).sum();
        self.weight_total = metrics.iter().map(|m| m.weight).sum();
        self.has_metrics = !metrics.is_empty();
        self.metrics = metrics;
        self
    }

    /// The reported value of the metric `name`.
    pub fn metric(&self, name: &str) -> Option<f64> {
        self.metrics
            .iter()
            .find(|m| m.name == name)
            .map(|m| m.value)
    }

    /// The candidate's score; `current` is true for the candidate the
    /// application is scheduled to now (see the module docs).
    pub fn score(&self, current: bool, stickiness: f64) -> f64 {
        let sticky_weight = if current { stickiness } else { 0.0 };
        let sticky = sticky_score(current, stickiness);
        if !self.has_metrics {
            return sticky;
        }
        let total = self.weight_total + sticky_weight;
        if total <= 0.0 || !total.is_finite() {
            return sticky;
        }
        (self.weighted_sum + sticky) / total
    }
}

/// Candidates with an index of their labels, so that label constraints are
/// evaluated as set operations (a few bit-set words per constraint) instead
/// of one label lookup per candidate: the part of a decision that grows
/// with the number of clusters.
#[derive(Debug, Clone, Default)]
pub struct CandidateSet {
    items: Vec<Candidate>,
    words: usize,
    /// Label key, then value, to the candidates with it.
    by_label: HashMap<String, HashMap<String, Vec<u64>>>,
    /// Label key to the candidates with any value of it.
    has_key: HashMap<String, Vec<u64>>,
}

fn set_bit(bits: &mut [u64], index: usize) {
    if let Some(word) = bits.get_mut(index / 64) {
        *word |= 1 << (index % 64);
    }
}

impl CandidateSet {
    /// Indexes `items`.
    pub fn new(items: Vec<Candidate>) -> Self {
        let words = items.len().div_ceil(64);
        let mut by_label: HashMap<String, HashMap<String, Vec<u64>>> = HashMap::new();
        let mut has_key: HashMap<String, Vec<u64>> = HashMap::new();
        for (index, candidate) in items.iter().enumerate() {
            for (key, value) in &candidate.labels {
                let values = by_label.entry(key.clone()).or_default();
                set_bit(
                    values
                        .entry(value.clone())
                        .or_insert_with(|| vec![0; words]),
                    index,
                );
                set_bit(
                    has_key.entry(key.clone()).or_insert_with(|| vec![0; words]),
                    index,
                );
            }
        }
        CandidateSet {
            items,
            words,
            by_label,
            has_key,
        }
    }

    /// The candidates, in the order given.
    pub fn items(&self) -> &[Candidate] {
        &self.items
    }

    /// How many candidates there are.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// ORs the candidates labelled `key=value` for each of `values` into `out`.
    fn union_into(&self, key: &str, values: &[String], out: &mut [u64]) {
        let Some(by_value) = self.by_label.get(key) else {
            return;
        };
        for value in values {
            if let Some(bits) = by_value.get(value.as_str()) {
                for (o, b) in out.iter_mut().zip(bits) {
                    *o |= b;
                }
            }
        }
    }

    /// The candidates whose labels satisfy every constraint (none: all), in
    /// order. Same semantics as [`LabelConstraint::matches`]: a missing label
    /// never matches.
    pub fn matching_labels<'a>(
        &'a self,
        constraints: Option<&[LabelConstraint]>,
    ) -> impl Iterator<Item = &'a Candidate> + 'a {
        let mut selected = vec![u64::MAX; self.words];
        if let Some(last) = selected.last_mut()
            && self.items.len() % 64 != 0
        {
            *last = (1u64 << (self.items.len() % 64)) - 1;
        }
        let mut scratch = vec![0u64; self.words];
        for constraint in constraints.unwrap_or_default() {
            scratch.iter_mut().for_each(|w| *w = 0);
            let key = constraint.key();
            let negated = match constraint.operator() {
                LabelOperator::Equal(_) | LabelOperator::In(_) => false,
                LabelOperator::NotEqual(_) | LabelOperator::NotIn(_) => true,
            };
            self.union_into(key, constraint.operator().values(), &mut scratch);
            if negated {
                match self.has_key.get(key) {
                    Some(has) => {
                        for ((s, h), o) in selected.iter_mut().zip(has).zip(&scratch) {
                            *s &= h & !o;
                        }
                    }
                    None => selected.iter_mut().for_each(|w| *w = 0),
                }
            } else {
                for (s, o) in selected.iter_mut().zip(&scratch) {
                    *s &= o;
                }
            }
        }
        selected
            .into_iter()
            .enumerate()
            .flat_map(|(word_index, word)| {
                let mut word = word;
                std::iter::from_fn(move || {
                    if word == 0 {
                        return None;
                    }
                    let bit = word.trailing_zeros() as usize;
                    word &= word - 1;
                    Some(word_index * 64 + bit)
                })
            })
            .filter_map(|index| self.items.get(index))
    }

    /// The candidates whose labels and metrics satisfy these constraints
    /// (clouds: they have no custom resources).
    pub fn matching_cloud<'a>(
        &'a self,
        labels: Option<&[LabelConstraint]>,
        metrics: Option<&'a [MetricConstraint]>,
    ) -> impl Iterator<Item = &'a Candidate> + 'a {
        self.matching_labels(labels)
            .filter(move |c| metrics_match(metrics, c))
    }

    /// The candidates satisfying an application's cluster constraints.
    pub fn matching_cluster<'a>(
        &'a self,
        constraints: &'a ClusterConstraints,
    ) -> impl Iterator<Item = &'a Candidate> + 'a {
        self.matching_labels(constraints.labels.as_deref())
            .filter(move |c| cluster_matches_except_labels(constraints, c))
    }
}

/// Custom resources and metrics of [`cluster_matches`].
fn cluster_matches_except_labels(constraints: &ClusterConstraints, candidate: &Candidate) -> bool {
    constraints
        .custom_resources
        .iter()
        .all(|required| candidate.custom_resources.iter().any(|c| c == required))
        && metrics_match(constraints.metrics.as_deref(), candidate)
}

/// True when every label constraint matches `labels` (none: matches).
pub fn labels_match(constraints: Option<&[LabelConstraint]>, labels: &Labels) -> bool {
    constraints
        .unwrap_or_default()
        .iter()
        .all(|constraint| constraint.matches(labels))
}

/// True when every metric constraint matches the candidate's metric values.
pub fn metrics_match(constraints: Option<&[MetricConstraint]>, candidate: &Candidate) -> bool {
    constraints
        .unwrap_or_default()
        .iter()
        .all(|constraint| constraint.matches_with(|name| candidate.metric(name)))
}

/// True when a cluster candidate satisfies an application's cluster
/// constraints: labels, custom resources and metrics.
pub fn cluster_matches(constraints: &ClusterConstraints, candidate: &Candidate) -> bool {
    labels_match(constraints.labels.as_deref(), &candidate.labels)
        && cluster_matches_except_labels(constraints, candidate)
}

/// True when a cloud candidate satisfies label and metric constraints
/// (clouds have no custom resources).
pub fn cloud_matches(
    labels: Option<&[LabelConstraint]>,
    metrics: Option<&[MetricConstraint]>,
    candidate: &Candidate,
) -> bool {
    labels_match(labels, &candidate.labels) && metrics_match(metrics, candidate)
}

/// The winner among `matching` candidates (see the module docs), `current`
/// being what the application is scheduled to now; `random` gives a number
/// in `0..n` to break ties among `n`.
pub fn choose<'a>(
    matching: &[&'a Candidate],
    current: Option<&ResourceRef>,
    stickiness: f64,
    mut random: impl FnMut(usize) -> usize,
) -> Option<&'a Candidate> {
    let with_metrics = matching.iter().any(|c| c.has_metrics);
    let mut best: Option<(f64, CandidateKind)> = None;
    let mut tied: Vec<&'a Candidate> = Vec::new();
    for &candidate in matching {
        if with_metrics && !candidate.has_metrics {
            continue;
        }
        let is_current = current == Some(&candidate.target);
        let score = if with_metrics {
            candidate.score(is_current, stickiness)
        } else {
            sticky_score(is_current, stickiness)
        };
        let better = match best {
            None => true,
            Some((best_score, best_kind)) => {
                score > best_score
                    || (score == best_score
                        && candidate.kind == CandidateKind::Cluster
                        && best_kind == CandidateKind::Cloud)
            }
        };
        let same = best.is_some_and(|(s, k)| s == score && k == candidate.kind);
        if better {
            best = Some((score, candidate.kind));
            tied.clear();
            tied.push(candidate);
        } else if same {
            tied.push(candidate);
        }
    }
    match tied.len() {
        0 => None,
        1 => tied.first().copied(),
        n => tied.get(random(n).min(n - 1)).copied(),
    }
}

/// The score of a candidate ranked without metrics.
fn sticky_score(current: bool, stickiness: f64) -> f64 {
    if current { stickiness } else { 0.0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(name: &str, metrics: &[(f64, f64)]) -> Candidate {
        let candidate = Candidate::new(
            ResourceRef::new("kubernetes", "Cluster", Some("ns".into()), name),
            CandidateKind::Cluster,
            Labels::new(),
            Vec::new(),
        );
        if metrics.is_empty() {
            return candidate;
        }
        candidate.with_metrics(
            metrics
                .iter()
                .enumerate()
                .map(|(i, &(normalized, weight))| MetricValue {
                    name: format!("m{i}"),
                    weight,
                    value: normalized * 100.0,
                    normalized,
                })
                .collect(),
        )
    }

    #[test]
    fn score_is_krakes_formula() {
        let c = cluster("a", &[(0.5, 1.0), (1.0, 3.0)]);
        assert!((c.score(false, 0.1) - (0.5 + 3.0) / 4.0).abs() < 1e-12);
        assert!((c.score(true, 0.1) - (0.5 + 3.0 + 0.1) / 4.1).abs() < 1e-12);
        let plain = cluster("b", &[]);
        assert_eq!(plain.score(false, 0.1), 0.0);
        assert_eq!(plain.score(true, 0.1), 0.1);
    }

    #[test]
    fn highest_score_wins_and_stickiness_can_keep_the_current_one() {
        let a = cluster("a", &[(0.50, 1.0)]);
        let b = cluster("b", &[(0.52, 1.0)]);
        let all = [&a, &b];
        assert_eq!(choose(&all, None, 0.1, |_| 0).unwrap().target.name, "b");
        // (0.5 + 0.1) / 1.1 = 0.545 > 0.52: staying wins.
        assert_eq!(
            choose(&all, Some(&a.target), 0.1, |_| 0)
                .unwrap()
                .target
                .name,
            "a"
        );
        // Without stickiness the better one wins.
        assert_eq!(
            choose(&all, Some(&a.target), 0.0, |_| 0)
                .unwrap()
                .target
                .name,
            "b"
        );
    }

    #[test]
    fn candidates_with_metrics_are_preferred() {
        let low = cluster("low", &[(0.0, 1.0)]);
        let none = cluster("none", &[]);
        let all = [&none, &low];
        // "none" would score 0.1 as the current one, but metric clusters
        // are ranked alone.
        assert_eq!(
            choose(&all, Some(&none.target), 0.1, |_| 0)
                .unwrap()
                .target
                .name,
            "low"
        );
        // Without any metrics, stickiness decides.
        let other = cluster("other", &[]);
        let all = [&other, &none];
        assert_eq!(
            choose(&all, Some(&none.target), 0.1, |_| 0)
                .unwrap()
                .target
                .name,
            "none"
        );
    }

    #[test]
    fn ties_are_random_and_prefer_clusters() {
        let a = cluster("a", &[(0.5, 1.0)]);
        let b = cluster("b", &[(0.5, 1.0)]);
        let all = [&a, &b];
        assert_eq!(choose(&all, None, 0.1, |_| 0).unwrap().target.name, "a");
        assert_eq!(choose(&all, None, 0.1, |_| 1).unwrap().target.name, "b");
        let mut cloud = cluster("cloud", &[(0.5, 1.0)]);
        cloud.kind = CandidateKind::Cloud;
        let all = [&cloud, &a];
        for pick in 0..2 {
            assert_eq!(choose(&all, None, 0.1, |_| pick).unwrap().target.name, "a");
        }
        assert!(choose(&[], None, 0.1, |_| 0).is_none());
    }

    #[test]
    fn metric_constraints_compare_the_value() {
        let c = cluster("a", &[(0.05, 10.0)]); // value 5, weight 10
        let lt = |text: &str| vec![MetricConstraint::parse(text).unwrap()];
        assert!(metrics_match(Some(&lt("m0 < 6")), &c));
        // Krake would compare 10 * 0.05 = 0.5.
        assert!(!metrics_match(Some(&lt("m0 < 1")), &c));
        assert!(!metrics_match(Some(&lt("missing > 0")), &c));
        assert!(metrics_match(None, &c));
    }

    #[test]
    fn the_label_index_agrees_with_matching_one_by_one() {
        let locations = ["DE", "FR", "IT"];
        let items: Vec<Candidate> = (0..130)
            .map(|i| {
                let mut c = cluster(&format!("c{i}"), &[]);
                if i % 7 != 0 {
                    c.labels.insert("location".into(), locations[i % 3].into());
                }
                if i % 2 == 0 {
                    c.labels.insert("tier".into(), "gold".into());
                }
                c
            })
            .collect();
        let set = CandidateSet::new(items.clone());
        for texts in [
            vec![],
            vec!["location is DE"],
            vec!["location != DE"],
            vec!["location in (DE, IT)"],
            vec!["location not in (DE, IT)"],
            vec!["location not in (DE, IT)", "tier = gold"],
            vec!["missing != x"],
            vec!["tier is not gold"],
            vec!["location is Mars"],
        ] {
            let constraints: Vec<LabelConstraint> = texts
                .iter()
                .map(|t| LabelConstraint::parse(t).unwrap())
                .collect();
            let indexed: Vec<&str> = set
                .matching_labels(Some(&constraints))
                .map(|c| c.target.name.as_str())
                .collect();
            let direct: Vec<&str> = items
                .iter()
                .filter(|c| labels_match(Some(&constraints), &c.labels))
                .map(|c| c.target.name.as_str())
                .collect();
            assert_eq!(indexed, direct, "{texts:?}");
        }
        assert_eq!(set.matching_labels(None).count(), 130);
    }

    #[test]
    fn custom_resources_and_labels_must_all_match() {
        let mut c = cluster("a", &[]);
        c.labels.insert("location".into(), "DE".into());
        c.custom_resources = vec!["crontabs.stable.example.com".into()];
        let mut constraints = ClusterConstraints {
            labels: Some(vec![LabelConstraint::parse("location is DE").unwrap()]),
            custom_resources: vec!["crontabs.stable.example.com".into()],
            metrics: None,
        };
        assert!(cluster_matches(&constraints, &c));
        constraints
            .custom_resources
            .push("other.example.com".into());
        assert!(!cluster_matches(&constraints, &c));
        constraints.custom_resources.pop();
        constraints.labels = Some(vec![LabelConstraint::parse("location != DE").unwrap()]);
        assert!(!cluster_matches(&constraints, &c));
    }
}
