//! Checking an answer against the range it was asked for, before any sample reaches a model.
//!
//! Every source's answer passes [`validate`] (the engine calls it in its one query function), so
//! what a model sees is inside `[start, end]`, on the grid `start + k·step`, finite, sorted and
//! unique in time, whatever the upstream sent: a single sample far in the future would otherwise
//! size a forecast path to reach it. [`check_labelsets`] refuses answers whose series collide
//! once `__name__` is dropped, as PromQL refuses such a vector.

use std::collections::BTreeMap;

use super::{format_labels, series_key, Error, Labels, Series};

/// Why a sample of an answer was dropped: the `reason` label of
/// `pulsewatch_samples_rejected_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Rejection {
    /// Before `start` or after `end` of the query.
    OutOfRange,
    /// Inside the range, but not at `start + k·step` (a fractional timestamp too).
    OffGrid,
    /// NaN, an infinity, or a value that is not a number.
    NotFinite,
    /// A second sample at a timestamp the series already has (the first one is kept).
    Duplicate,
}

impl Rejection {
    /// Every reason, in the order they are checked.
    pub const ALL: [Rejection; 4] = [Rejection::OutOfRange, Rejection::OffGrid, Rejection::NotFinite, Rejection::Duplicate];

    /// The label value: `out_of_range`, `off_grid`, `not_finite`, `duplicate`.
    pub fn as_str(self) -> &'static str {
        match self {
            Rejection::OutOfRange => "out_of_range",
            Rejection::OffGrid => "off_grid",
            Rejection::NotFinite => "not_finite",
            Rejection::Duplicate => "duplicate",
        }
    }
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How many samples were dropped, by reason.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rejections([u64; Rejection::ALL.len()]);

impl Rejections {
    /// Counts `n` more samples dropped for `reason`.
    pub fn add(&mut self, reason: Rejection, n: u64) {
        self.0[reason as usize] += n;
    }

    /// Samples dropped for `reason`.
    pub fn get(&self, reason: Rejection) -> u64 {
        self.0[reason as usize]
    }

    /// Samples dropped for any reason.
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    /// Adds `other`'s counts to these.
    pub fn merge(&mut self, other: Rejections) {
        for reason in Rejection::ALL {
            self.add(reason, other.get(reason));
        }
    }

    /// The reasons with a count above 0, and their counts.
    pub fn iter(&self) -> impl Iterator<Item = (Rejection, u64)> + '_ {
        Rejection::ALL.into_iter().map(|r| (r, self.get(r))).filter(|(_, n)| *n > 0)
    }
}

impl std::fmt::Display for Rejections {
    /// `out_of_range=2 duplicate=1`, for logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self.iter().map(|(r, n)| format!("{r}={n}")).collect();
        f.write_str(&parts.join(" "))
    }
}

/// Keeps the samples of `series` that a query of `[start, end]` at `step` (Unix seconds,
/// inclusive) can answer: inside the range, on its grid and finite; then sorts each series in
/// time and keeps the first sample of each timestamp. Series left without samples are dropped.
/// Returns what is left and how many samples were dropped, by the first reason that applies
/// (in [`Rejection::ALL`] order).
///
/// ```
/// use pulsewatch::source::{validate, Labels, Rejection, Series};
/// let answer = vec![Series { labels: Labels::new(), samples: vec![(120, 2.0), (60, 1.0), (90, 7.0), (60, 3.0), (600, 9.0)] }];
/// let (series, rejected) = validate(answer, 0, 300, 60);
/// assert_eq!(series[0].samples, vec![(60, 1.0), (120, 2.0)]);
/// assert_eq!((rejected.get(Rejection::OffGrid), rejected.get(Rejection::Duplicate), rejected.get(Rejection::OutOfRange)), (1, 1, 1));
/// ```
pub fn validate(series: Vec<Series>, start: i64, end: i64, step: i64) -> (Vec<Series>, Rejections) {
    // A step below 1 s has no grid; the config never makes one, but a caller's bug must not
    // divide by zero.
    let step = step.max(1);
    let mut rejected = Rejections::default();
    let valid = series
        .into_iter()
        .filter_map(|mut s| {
            s.samples.retain(|&(ts, v)| {
                let reason = if ts < start || ts > end {
                    Rejection::OutOfRange
                } else if (ts - start) % step != 0 {
                    Rejection::OffGrid
                } else if !v.is_finite() {
                    Rejection::NotFinite
                } else {
                    return true;
                };
                rejected.add(reason, 1);
                false
            });
            // stable: of two samples at one timestamp, the one the source sent first stays
            s.samples.sort_by_key(|p| p.0);
            let before = s.samples.len();
            s.samples.dedup_by_key(|p| p.0);
            rejected.add(Rejection::Duplicate, (before - s.samples.len()) as u64);
            // A series whose samples were all dropped (all NaN, say 0/0) has nothing to model.
            (!s.samples.is_empty()).then_some(s)
        })
        .collect();
    (valid, rejected)
}

/// Refuses an answer in which two series have the same labels once `__name__` is dropped
/// (`a{x="1"}` and `b{x="1"}`): pulsewatch's outputs drop `__name__`, so they would be merged
/// into one model and one output. PromQL refuses such a vector the same way.
///
/// # Errors
/// [`Error::DuplicateLabelset`] naming the first such pair.
pub fn check_labelsets(series: &[Series]) -> Result<(), Error> {
    let mut seen: BTreeMap<Labels, &Labels> = BTreeMap::new();
    for s in series {
        if let Some(first) = seen.insert(series_key(&s.labels), &s.labels) {
            return Err(Error::DuplicateLabelset {
                key: format_labels(&series_key(&s.labels)),
                first: format_labels(first),
                second: format_labels(&s.labels),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(samples: Vec<(i64, f64)>) -> Vec<Series> {
        vec![Series { labels: Labels::from([("job".into(), "a".into())]), samples }]
    }

    #[test]
    fn table() {
        struct Case {
            samples: Vec<(i64, f64)>,
            kept: Vec<(i64, f64)>,
            rejected: [(Rejection, u64); 4],
        }
        use Rejection::*;
        let none = |r: Rejection| (r, 0);
        let (start, end, step) = (600, 1200, 60);
        let cases = [
            Case { samples: vec![(600, 1.0), (660, 2.0)], kept: vec![(600, 1.0), (660, 2.0)], rejected: Rejection::ALL.map(none) },
            Case {
                samples: vec![(540, 1.0), (1260, 2.0), (i64::MAX, 3.0), (i64::MIN, 4.0), (1200, 5.0)],
                kept: vec![(1200, 5.0)],
                rejected: [(OutOfRange, 4), none(OffGrid), none(NotFinite), none(Duplicate)],
            },
            Case {
                samples: vec![(601, 1.0), (659, 2.0), (1199, 3.0), (900, 4.0)],
                kept: vec![(900, 4.0)],
                rejected: [none(OutOfRange), (OffGrid, 3), none(NotFinite), none(Duplicate)],
            },
            Case {
                samples: vec![(600, f64::NAN), (660, f64::INFINITY), (720, f64::NEG_INFINITY), (780, -0.0)],
                kept: vec![(780, -0.0)],
                rejected: [none(OutOfRange), none(OffGrid), (NotFinite, 3), none(Duplicate)],
            },
            Case {
                samples: vec![(720, 3.0), (600, 1.0), (720, 9.0), (660, 2.0), (600, 8.0), (720, 7.0)],
                kept: vec![(600, 1.0), (660, 2.0), (720, 3.0)],
                rejected: [none(OutOfRange), none(OffGrid), none(NotFinite), (Duplicate, 3)],
            },
            // the first reason that applies is the one counted
            Case {
                samples: vec![(1e12 as i64, f64::NAN), (630, f64::NAN)],
                kept: vec![],
                rejected: [(OutOfRange, 1), (OffGrid, 1), none(NotFinite), none(Duplicate)],
            },
        ];
        for (i, c) in cases.into_iter().enumerate() {
            let (series, rejected) = validate(one(c.samples), start, end, step);
            let kept = series.first().map(|s| s.samples.clone()).unwrap_or_default();
            assert_eq!(kept, c.kept, "case {i}");
            assert!(c.kept.is_empty() == series.is_empty(), "case {i}: an emptied series is dropped");
            for (reason, n) in c.rejected {
                assert_eq!(rejected.get(reason), n, "case {i}: {reason}");
            }
        }
    }

    #[test]
    fn counts_add_up_and_print() {
        let mut r = Rejections::default();
        r.add(Rejection::Duplicate, 2);
        let mut other = Rejections::default();
        other.add(Rejection::OutOfRange, 1);
        other.add(Rejection::Duplicate, 1);
        r.merge(other);
        assert_eq!(r.total(), 4);
        assert_eq!(r.to_string(), "out_of_range=1 duplicate=3");
    }

    #[test]
    fn a_zero_step_does_not_divide_by_zero() {
        let (series, rejected) = validate(one(vec![(600, 1.0), (601, 2.0)]), 600, 700, 0);
        assert_eq!(series[0].samples.len(), 2);
        assert_eq!(rejected.total(), 0);
    }

    #[test]
    fn labelsets_must_differ_without_the_name() {
        let s = |pairs: &[(&str, &str)]| Series {
            labels: pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            samples: vec![(0, 1.0)],
        };
        assert!(check_labelsets(&[s(&[("__name__", "a"), ("x", "1")]), s(&[("__name__", "a"), ("x", "2")])]).is_ok());
        let err = check_labelsets(&[s(&[("__name__", "a"), ("x", "1")]), s(&[("x", "2")]), s(&[("__name__", "b"), ("x", "1")])])
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            r#"vector cannot contain metrics with the same labelset: {__name__="a", x="1"} and {__name__="b", x="1"} are both {x="1"} once __name__ is dropped"#
        );
    }
}
