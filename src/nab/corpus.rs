//! NAB's corpus steps: one threshold per profile optimised over all files together
//! (`optimizer.py`), the per-file scores at it (`scorer.py`), and the normalisation between the
//! null detector and a perfect one (`Runner.normalize`).

use super::sweep::zones;
use super::threshold::{at_threshold, candidates, sweep_thresholds, FileScore};
use super::{Error, FileResult, Labels, Profile};

/// The anomaly score NAB's null detector gives every row.
const NULL_SCORE: f64 = 0.5;

/// A detector's NAB result on a corpus for one profile.
#[derive(Clone, Debug, PartialEq)]
pub struct CorpusScore {
    /// The profile scored with.
    pub profile: Profile,
    /// The optimised threshold: rows scoring at least this are detections (1.1: none are).
    pub threshold: f64,
    /// The raw score: the sum of the files' raw scores at `threshold`.
    pub raw: f64,
    /// The raw score of NAB's null detector (0.5 on every row, its threshold optimised too).
    pub null: f64,
    /// The raw score of a perfect detector: tp_weight per window.
    pub perfect: f64,
    /// `100 · (raw − null) / (perfect − null)`: 0 for the null detector, 100 for a perfect one.
    /// `None` when `perfect == null`, e.g. for a corpus without windows.
    pub normalized: Option<f64>,
    /// Each file's score at `threshold`, in input order.
    pub files: Vec<FileScore>,
}

/// Optimises the threshold over `files` and scores them under `profile`, as NAB's optimize,
/// score and normalize steps do.
///
/// The perfect score counts the windows of the scored files; NAB counts every window in its
/// labels, which is the same when every labelled file is scored.
///
/// # Errors
/// [`Error::Unlabelled`] for a file without labels, or any error of its rows (see [`Error`]).
pub fn optimize(files: &[FileResult], labels: &Labels, profile: &Profile) -> Result<CorpusScore, Error> {
    let (threshold, scores) = best_threshold(files, labels, profile)?;
    let null_files: Vec<FileResult> = files.iter().map(|f| FileResult { scores: vec![NULL_SCORE; f.scores.len()], ..f.clone() }).collect();
    let (_, null_scores) = best_threshold(&null_files, labels, profile)?;
    let windows: usize = files.iter().filter_map(|f| labels.windows(&f.key)).map(<[_]>::len).sum();
    let perfect = windows as f64 * profile.tp_weight;
    let raw = total(&scores);
    let null = total(&null_scores);
    let normalized = (perfect != null).then(|| 100.0 * (raw - null) / (perfect - null));
    Ok(CorpusScore { profile: *profile, threshold, raw, null, perfect, normalized, files: scores })
}

/// A detector's NAB result when each fold is scored at a threshold it had no say in.
#[derive(Clone, Debug, PartialEq)]
pub struct CrossValidated {
    /// The held-out folds' raw scores, summed.
    pub raw: f64,
    /// The same for NAB's null detector.
    pub null: f64,
    /// A perfect detector's raw score.
    pub perfect: f64,
    /// `100 · (raw − null) / (perfect − null)`; `None` when `perfect == null`.
    pub normalized: Option<f64>,
}

/// NAB's score with each fold scored at a threshold it had no say in: the files are split into
/// folds by `fold_of` (their category, say), each fold is scored at the threshold optimised on
/// all the other folds, and the held-out raw scores are pooled and normalised as [`optimize`]
/// normalises (the null detector cross-validated the same way). A detector whose scores mean
/// the same on every series loses little here; one whose best threshold differs from category
/// to category loses what the in-sample score hides. `None` with fewer than two folds.
///
/// # Errors
/// As [`optimize`].
pub fn cross_validate(
    files: &[FileResult],
    labels: &Labels,
    profile: &Profile,
    fold_of: impl Fn(&str) -> String,
) -> Result<Option<CrossValidated>, Error> {
    let folds: Vec<String> = files.iter().map(|f| fold_of(&f.key)).collect();
    let mut names: Vec<&String> = folds.iter().collect();
    names.sort();
    names.dedup();
    if names.len() < 2 {
        return Ok(None);
    }
    let null_files: Vec<FileResult> = files.iter().map(|f| FileResult { scores: vec![NULL_SCORE; f.scores.len()], ..f.clone() }).collect();
    let (mut raw, mut null) = (0.0, 0.0);
    for name in names {
        let split = |all: &[FileResult], held_out: bool| -> Vec<FileResult> {
            all.iter().zip(&folds).filter(|(_, f)| (*f == name) == held_out).map(|(file, _)| file.clone()).collect()
        };
        for (detector, total) in [(files, &mut raw), (null_files.as_slice(), &mut null)] {
            let (threshold, _) = best_threshold(&split(detector, false), labels, profile)?;
            for file in split(detector, true) {
                let windows = labels.windows(&file.key).ok_or_else(|| Error::Unlabelled { key: file.key.clone() })?;
                *total += super::score_file(&file, windows, profile, threshold)?.raw;
            }
        }
    }
    // Every file is held out once.
    let perfect = files.iter().filter_map(|f| labels.windows(&f.key)).map(<[_]>::len).sum::<usize>() as f64 * profile.tp_weight;
    let normalized = (perfect != null).then(|| 100.0 * (raw - null) / (perfect - null));
    Ok(Some(CrossValidated { raw, null, perfect, normalized }))
}

/// NAB's totals row: the files' raw scores summed in order.
fn total(scores: &[FileScore]) -> f64 {
    scores.iter().fold(0.0, |sum, s| sum + s.raw)
}

/// The threshold with the highest corpus score, and each file's score at it.
fn best_threshold(files: &[FileResult], labels: &Labels, profile: &Profile) -> Result<(f64, Vec<FileScore>), Error> {
    let mut all = Vec::new();
    let mut per_file = Vec::with_capacity(files.len());
    let mut window_count = 0;
    for file in files {
        let windows = labels.windows(&file.key).ok_or_else(|| Error::Unlabelled { key: file.key.clone() })?;
        let zones = zones(file, windows)?;
        // Corpus-wide window numbers keep windows of different files apart.
        all.extend(candidates(file, &zones, profile, window_count));
        per_file.push((candidates(file, &zones, profile, 0), windows.len()));
        window_count += windows.len();
    }
    let sweep = sweep_thresholds(all, window_count, profile.fn_weight);
    // NAB sorts by score (stably) and takes the first: among ties, the highest threshold.
    // A sweep is never empty: it starts with the no-detection entry.
    let best = sweep.iter().fold(sweep[0], |best, s| if s.score > best.score { *s } else { best });
    let scores = files
        .iter()
        .zip(per_file)
        .map(|(file, (rows, windows))| {
            let sweep = sweep_thresholds(rows, windows, profile.fn_weight);
            FileScore::new(&file.key, best.threshold, at_threshold(&sweep, best.threshold))
        })
        .collect();
    Ok((best.threshold, scores))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::nab::fixtures::{assert_close, detections, file, window};
    use crate::nab::score_file;

    /// Three files of 100 rows each (rows 0..=14 probationary) with three 10-row windows.
    fn labels() -> Labels {
        [
            ("a/one.csv".to_string(), vec![window(40, 49)]),
            ("a/two.csv".to_string(), vec![window(40, 49), window(70, 79)]),
            ("b/none.csv".to_string(), vec![]),
        ]
        .into_iter()
        .collect()
    }

    /// The corpus of [`labels`], detecting the given rows of each file.
    fn corpus(one: &[usize], two: &[usize], none: &[usize]) -> Vec<FileResult> {
        vec![detections("a/one.csv", 100, one), detections("a/two.csv", 100, two), detections("b/none.csv", 100, none)]
    }

    #[test]
    fn cross_validation_scores_each_fold_at_the_others_threshold() {
        // `one` and `two` (category a) detect their three windows' first rows at 0.9; `none`
        // (category b, no windows) flags two rows at 0.95.
        let mut files = corpus(&[40], &[40, 70], &[50, 60]);
        for f in &mut files[..2] {
            f.scores.iter_mut().for_each(|s| *s *= 0.9);
        }
        for s in &mut files[2].scores {
            *s *= 0.95;
        }
        let by_category = |key: &str| key.split('/').next().unwrap().to_string();
        let profile = Profile::STANDARD;
        // In sample the threshold is 0.9: three windows (+3) and two false positives (−0.22).
        assert_close(optimize(&files, &labels(), &profile).unwrap().raw, 3.0 - 0.22);
        // Held out, a is scored at b's best threshold, which detects nothing (the highest of the
        // ties): three misses, −3. b is scored at a's, 0.9: its two rows are false positives.
        let cv = cross_validate(&files, &labels(), &profile, by_category).unwrap().unwrap();
        assert_close(cv.raw, -3.0 - 0.22);
        assert_close(cv.perfect, 3.0);
        // one fold: nothing to hold out
        assert_eq!(cross_validate(&files, &labels(), &profile, |_| "all".to_string()).unwrap(), None);
    }

    #[test]
    fn perfect_detector_normalizes_to_100() {
        // Fires on each window's first row: 3 detections worth tp_weight = 1 each.
        // Null: 3 missed windows, -3·fn_weight; flagging all rows would cost more (b/none.csv
        // alone has 85 scored rows, 85·0.11 = 9.35 > 6).
        for profile in Profile::ALL {
            let score = optimize(&corpus(&[40], &[40, 70], &[]), &labels(), &profile).unwrap();
            let expected = (1.0, 3.0, 3.0, -3.0 * profile.fn_weight);
            assert_eq!((score.threshold, score.raw, score.perfect, score.null), expected, "{}", profile.name);
            // 100·(3 + 3·fn)/(3 + 3·fn).
            assert_eq!(score.normalized, Some(100.0), "{}", profile.name);
        }
    }

    #[test]
    fn null_and_never_firing_detectors_normalize_to_0() {
        // Any constant score is the null detector: same two thresholds, same scores.
        for profile in Profile::ALL {
            for constant in [0.0, 0.5, 1.0] {
                let mut files = corpus(&[], &[], &[]);
                files.iter_mut().for_each(|f| f.scores.fill(constant));
                let score = optimize(&files, &labels(), &profile).unwrap();
                assert_eq!(score.raw, -3.0 * profile.fn_weight);
                assert_eq!(score.normalized, Some(0.0), "{} at {constant}", profile.name);
            }
        }
    }

    #[test]
    fn one_window_of_three_scores_a_third() {
        // a/one.csv's window detected at its first row, the other two missed: 1 - 2·fn_weight.
        // standard: 100·(-1 + 3)/(3 + 3) = 33.33; reward_low_FN_rate: 100·(-3 + 6)/(3 + 6) = 33.33.
        for profile in Profile::ALL {
            let score = optimize(&corpus(&[40], &[], &[]), &labels(), &profile).unwrap();
            assert_close(score.raw, 1.0 - 2.0 * profile.fn_weight);
            assert_close(score.normalized.unwrap(), 100.0 / 3.0);
            let raws: Vec<f64> = score.files.iter().map(|f| f.raw).collect();
            assert_eq!(raws, [1.0, -2.0 * profile.fn_weight, 0.0]);
        }
    }

    #[test]
    fn threshold_optimisation_depends_on_profile() {
        // One file of 100 rows (0..=14 probationary), window 40..=49. Score 0.8 on row 45 and on
        // the 10 rows 20..=29 before the window, 0 elsewhere.
        // Threshold 0.8: row 45 at -(49 - 45 + 1)/10 = -0.5 earns tanh(1.25)/tanh(2.5) = 0.85979,
        // and the 10 false positives before any window cost 10·fp_weight:
        //   standard:           0.85979 - 1.1 = -0.24021 > -1 (nothing detected): 0.8
        //   reward_low_FP_rate: 0.85979 - 2.2 = -1.34021 < -1: 1.1, nothing detected
        //   reward_low_FN_rate: 0.85979 - 1.1 = -0.24021 > -2: 0.8
        // Threshold 0 adds 15 false positives before the window, at least -1.65 more: worse.
        let mut hits = vec![(45, 0.8)];
        hits.extend((20..30).map(|row| (row, 0.8)));
        let files = [file("a/one.csv", 100, &hits)];
        let labels: Labels = [("a/one.csv".to_string(), vec![window(40, 49)])].into_iter().collect();
        let expected = [(0.8, -0.2402074330902164), (1.1, -1.0), (0.8, -0.2402074330902164)];
        for (profile, (threshold, raw)) in Profile::ALL.iter().zip(expected) {
            let score = optimize(&files, &labels, profile).unwrap();
            assert_eq!(score.threshold, threshold, "{}", profile.name);
            assert_close(score.raw, raw);
        }
    }

    #[test]
    fn ties_go_to_the_highest_threshold() {
        // Window 40..=49: 0.9 on row 42, 0.6 on row 45. Once row 42 is detected, row 45 adds
        // nothing: thresholds 0.9 and 0.6 both score tanh(2)/tanh(2.5) = 0.97711 (position
        // -(49 - 42 + 1)/10 = -0.8). NAB keeps the first of a stable sort: 0.9.
        let files = [file("a/one.csv", 100, &[(42, 0.9), (45, 0.6)])];
        let labels: Labels = [("a/one.csv".to_string(), vec![window(40, 49)])].into_iter().collect();
        let score = optimize(&files, &labels, &Profile::STANDARD).unwrap();
        assert_eq!(score.threshold, 0.9);
        assert_close(score.raw, 0.9771068409226047);
    }

    #[test]
    fn unlabelled_file_is_an_error() {
        let files = [detections("c/unknown.csv", 10, &[])];
        let err = optimize(&files, &labels(), &Profile::STANDARD).unwrap_err();
        assert!(matches!(err, Error::Unlabelled { ref key } if key == "c/unknown.csv"), "{err}");
    }

    proptest! {
        #[test]
        fn optimum_beats_every_threshold(levels in prop::collection::vec(0u8..5, 300), pick in 0u8..5) {
            let mut files = corpus(&[], &[], &[]);
            for (file, levels) in files.iter_mut().zip(levels.chunks(100)) {
                file.scores = levels.iter().map(|&l| f64::from(l) / 4.0).collect();
            }
            let labels = labels();
            for profile in Profile::ALL {
                let best = optimize(&files, &labels, &profile).unwrap();
                prop_assert!(best.normalized.unwrap() <= 100.0 + 1e-9);
                let threshold = f64::from(pick) / 4.0;
                let other: f64 = files
                    .iter()
                    .map(|f| score_file(f, labels.windows(&f.key).unwrap(), &profile, threshold).unwrap().raw)
                    .sum();
                prop_assert!(other <= best.raw + 1e-9, "{other} at {threshold} > {}", best.raw);
            }
        }
    }
}
