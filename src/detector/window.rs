//! From query answers to model windows: join the channels' series on their labels, put them on
//! the step grid, and cut the last `n` grid points into a window.
//!
//! The live detector and `pulsewatch export-windows` both use this, so a model is trained on
//! windows built exactly as the ones it scores.

use std::collections::BTreeMap;

use crate::source::{format_labels, series_key, Labels, Series};

/// Share of a window's grid points that must hold data; the rest are filled from neighbours.
const MIN_PRESENT: f64 = 0.75;

/// The identity of a joined series: its labels without `__name__`, or only the `on` labels.
pub fn join_key(labels: &Labels, on: Option<&[String]>) -> Labels {
    match on {
        Some(on) => labels.iter().filter(|(k, _)| on.contains(k)).map(|(k, v)| (k.clone(), v.clone())).collect(),
        None => series_key(labels),
    }
}

/// The samples of one series: `(timestamp, value)`.
pub type Samples = Vec<(i64, f64)>;

/// The channels' series, joined on their keys.
#[derive(Debug, Default, PartialEq)]
pub struct Joined {
    /// Per key, the samples of every channel, in channel order.
    pub series: BTreeMap<Labels, Vec<Samples>>,
    /// Keys that some channel lacks, with the first such channel: a window needs all of them.
    pub partial: Vec<(Labels, String)>,
}

/// Two series of one channel on one key: as PromQL refuses many-to-one matching without
/// grouping, the channels cannot be joined.
#[derive(Debug, thiserror::Error)]
#[error("channel {channel:?}: more than one series has the labels {}; aggregate them (`sum by (...)`) or set `on`", format_labels(.labels))]
pub struct JoinError {
    /// The channel.
    pub channel: String,
    /// The key its series share.
    pub labels: Labels,
}

/// Joins one answer per channel (named) on the series' keys.
///
/// # Errors
/// Two series of one channel share a key.
pub fn join(answers: Vec<(&str, Vec<Series>)>, on: Option<&[String]>) -> Result<Joined, JoinError> {
    let names: Vec<String> = answers.iter().map(|(name, _)| name.to_string()).collect();
    let mut joined: BTreeMap<Labels, Vec<Option<Samples>>> = BTreeMap::new();
    for (c, (name, series)) in answers.into_iter().enumerate() {
        for s in series {
            let key = join_key(&s.labels, on);
            let slot = &mut joined.entry(key.clone()).or_insert_with(|| vec![None; names.len()])[c];
            if slot.is_some() {
                return Err(JoinError { channel: name.to_string(), labels: key });
            }
            *slot = Some(s.samples);
        }
    }
    let mut out = Joined::default();
    for (key, channels) in joined {
        match channels.iter().position(Option::is_none) {
            Some(missing) => out.partial.push((key, names[missing].clone())),
            None => {
                out.series.insert(key, channels.into_iter().flatten().collect());
            }
        }
    }
    Ok(out)
}

/// Puts each channel's samples on the grid `start + i * step`, `i < len`: per grid point the
/// values of all channels, or `None` where any channel has no sample.
pub fn align(channels: &[Samples], start: i64, step: i64, len: usize) -> Vec<Option<Vec<f64>>> {
    let mut grid: Vec<Vec<Option<f64>>> = vec![vec![None; channels.len()]; len];
    for (c, samples) in channels.iter().enumerate() {
        for &(ts, v) in samples {
            let offset = ts - start;
            if offset >= 0 && offset % step == 0 && ((offset / step) as usize) < len && v.is_finite() {
                grid[(offset / step) as usize][c] = Some(v);
            }
        }
    }
    grid.into_iter().map(|point| point.into_iter().collect()).collect()
}

/// The window of the `n` grid points ending at index `last`, time-major, or `None` when its
/// newest point is missing or fewer than 3/4 of its points hold data. Gaps take the previous
/// point's values (the first points, the first present one's).
pub fn window(grid: &[Option<Vec<f64>>], last: usize, n: usize) -> Option<Vec<f64>> {
    if n == 0 || last + 1 < n || last >= grid.len() {
        return None;
    }
    let points = &grid[last + 1 - n..=last];
    grid[last].as_ref()?;
    let present = points.iter().filter(|p| p.is_some()).count();
    if (present as f64) < MIN_PRESENT * n as f64 {
        return None;
    }
    let mut fill = points.iter().flatten().next()?;
    let mut values = Vec::with_capacity(n * fill.len());
    for point in points {
        if let Some(p) = point {
            fill = p;
        }
        values.extend_from_slice(fill);
    }
    Some(values)
}

/// Every complete window of `n` points over the grid, newest point advancing by `stride`:
/// `(index of its newest point, values)`.
pub fn windows(grid: &[Option<Vec<f64>>], n: usize, stride: usize) -> impl Iterator<Item = (usize, Vec<f64>)> + '_ {
    (n.max(1) - 1..grid.len()).step_by(stride.max(1)).filter_map(move |last| Some((last, window(grid, last, n)?)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(labels: &[(&str, &str)], samples: &[(i64, f64)]) -> Series {
        Series { labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(), samples: samples.to_vec() }
    }

    #[test]
    fn joins_channels_on_labels_or_on_a_subset() {
        let cpu = vec![
            series(&[("__name__", "cpu"), ("instance", "a")], &[(0, 1.0)]),
            series(&[("__name__", "cpu"), ("instance", "b")], &[(0, 2.0)]),
        ];
        let mem = vec![series(&[("__name__", "mem"), ("instance", "a")], &[(0, 10.0)])];
        let joined = join(vec![("cpu", cpu.clone()), ("mem", mem.clone())], None).unwrap();
        let key = |i: &str| -> Labels { [("instance".to_string(), i.to_string())].into() };
        assert_eq!(joined.series.len(), 1);
        assert_eq!(joined.series[&key("a")], vec![vec![(0, 1.0)], vec![(0, 10.0)]]);
        assert_eq!(joined.partial, vec![(key("b"), "mem".to_string())], "b has no mem: not scored");

        // with `on`, extra labels do not stop the join
        let mem = vec![series(&[("instance", "a"), ("job", "node")], &[(0, 10.0)])];
        assert!(join(vec![("cpu", cpu.clone()), ("mem", mem.clone())], None).unwrap().series.is_empty());
        let on = ["instance".to_string()];
        assert_eq!(join(vec![("cpu", cpu), ("mem", mem)], Some(&on)).unwrap().series.len(), 1);

        // two series of one channel on one key: refused, naming the channel and the labels
        let twice = vec![series(&[("instance", "a"), ("cpu", "0")], &[]), series(&[("instance", "a"), ("cpu", "1")], &[])];
        let err = join(vec![("cpu", twice)], Some(&on)).unwrap_err().to_string();
        assert!(err.contains(r#"channel "cpu""#) && err.contains(r#"{instance="a"}"#), "{err}");
    }

    #[test]
    fn aligns_and_fills_small_gaps_only() {
        // two channels on a grid of 8 from t=100 step 10; channel 1 misses t=120, channel 0 t=150
        let a: Vec<(i64, f64)> = (0..8).filter(|i| *i != 5).map(|i| (100 + 10 * i, i as f64)).collect();
        let b: Vec<(i64, f64)> = (0..8).filter(|i| *i != 2).map(|i| (100 + 10 * i, 10.0 * i as f64)).chain([(105, 99.0)]).collect();
        let grid = align(&[a, b], 100, 10, 8);
        assert_eq!(grid[0], Some(vec![0.0, 0.0]));
        assert_eq!(grid[2], None, "a point needs every channel");
        assert_eq!(grid[5], None);
        // the window of 4 ending at 3: points 0..=3, point 2 filled from point 1
        assert_eq!(window(&grid, 3, 4), Some(vec![0.0, 0.0, 1.0, 10.0, 1.0, 10.0, 3.0, 30.0]));
        // ending at 5: the newest point is missing
        assert_eq!(window(&grid, 5, 4), None);
        // ending at 7 over 6 points: 2 of 6 missing is more than a quarter
        assert_eq!(window(&grid, 7, 6), None);
        assert_eq!(window(&grid, 7, 4).map(|w| w.len()), Some(8));
        // not enough points before `last`
        assert_eq!(window(&grid, 2, 4), None);
        // sliding: every end but 5, whose newest point is missing
        let ends: Vec<usize> = windows(&grid, 4, 1).map(|(last, _)| last).collect();
        assert_eq!(ends, [3, 4, 6, 7]);
        assert_eq!(windows(&grid, 4, 3).map(|(last, _)| last).collect::<Vec<_>>(), [3, 6]);
    }
}
