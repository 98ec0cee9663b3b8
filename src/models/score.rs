//! The anomaly score: 0 on the prediction, 1 at the band's edge, growing beyond it.

use crate::config::Direction;

/// Largest score exported: keeps a zero-width band from producing infinity.
pub(crate) const MAX_SCORE: f64 = 1e9;

/// Scores observation `y` against prediction `yhat` and its band `[lower, upper]`.
///
/// The deviation is divided by the half-width of the band on its own side, so 1 is the band's
/// edge. Deviations that the `direction` guard ignores, or smaller than `min_deviation`, score 0,
/// and so does a `y` or `yhat` that is not finite (there is nothing to measure).
/// The result is always finite and in `[0, MAX_SCORE]`: a deviation or band wider than
/// `f64::MAX` (values near ±1e308) is measured in halves, which cannot overflow and have the
/// same ratio, so the largest deviations score the most, never 0.
///
/// ```
/// use pulsewatch::config::Direction;
/// use pulsewatch::models::anomaly_score;
/// assert_eq!(anomaly_score(12.0, 10.0, 6.0, 12.0, Direction::Both, 0.0), 1.0);
/// assert_eq!(anomaly_score(8.0, 10.0, 6.0, 12.0, Direction::Both, 0.0), 0.5);
/// assert_eq!(anomaly_score(8.0, 10.0, 6.0, 12.0, Direction::Above, 0.0), 0.0);
/// assert_eq!(anomaly_score(1e308, -1e308, -1.5e308, 1e308, Direction::Both, 0.0), 1.0);
/// ```
pub fn anomaly_score(y: f64, yhat: f64, lower: f64, upper: f64, direction: Direction, min_deviation: f64) -> f64 {
    if !(y.is_finite() && yhat.is_finite()) || y == yhat {
        return 0.0;
    }
    let above = y > yhat;
    match (direction, above) {
        (Direction::Above, false) | (Direction::Below, true) => return 0.0,
        _ => {}
    }
    let edge = if above { upper } else { lower };
    let (mut deviation, mut half_width, mut min_deviation) = ((y - yhat).abs(), (edge - yhat).abs(), min_deviation);
    // Both finite inputs, yet a difference of infinity: measure in halves instead (exact for
    // ordinary values, so nothing changes for them).
    if deviation.is_infinite() || (edge.is_finite() && half_width.is_infinite()) {
        (deviation, half_width, min_deviation) = ((y / 2.0 - yhat / 2.0).abs(), (edge / 2.0 - yhat / 2.0).abs(), min_deviation / 2.0);
    }
    if deviation < min_deviation {
        return 0.0;
    }
    // The band's edge on the wrong side of the prediction counts as no band.
    let inside = if above { edge >= yhat } else { edge <= yhat };
    // A flat history gives a zero-width band; any deviation from it is then maximally surprising.
    let half_width = if inside && half_width.is_finite() && half_width > 0.0 { half_width } else { f64::MIN_POSITIVE };
    let score = deviation / half_width;
    if score.is_finite() {
        score.min(MAX_SCORE)
    } else {
        MAX_SCORE
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn table() {
        struct Case {
            y: f64,
            direction: Direction,
            min_deviation: f64,
            expected: f64,
        }
        // yhat 10, band [6, 12]: half-widths 4 below, 2 above.
        let cases = [
            Case { y: 10.0, direction: Direction::Both, min_deviation: 0.0, expected: 0.0 },
            Case { y: 12.0, direction: Direction::Both, min_deviation: 0.0, expected: 1.0 },
            Case { y: 6.0, direction: Direction::Both, min_deviation: 0.0, expected: 1.0 },
            Case { y: 14.0, direction: Direction::Both, min_deviation: 0.0, expected: 2.0 },
            Case { y: 2.0, direction: Direction::Both, min_deviation: 0.0, expected: 2.0 },
            Case { y: 14.0, direction: Direction::Below, min_deviation: 0.0, expected: 0.0 },
            Case { y: 2.0, direction: Direction::Below, min_deviation: 0.0, expected: 2.0 },
            Case { y: 2.0, direction: Direction::Above, min_deviation: 0.0, expected: 0.0 },
            Case { y: 14.0, direction: Direction::Both, min_deviation: 5.0, expected: 0.0 },
            Case { y: 16.0, direction: Direction::Both, min_deviation: 5.0, expected: 3.0 },
        ];
        for (i, c) in cases.iter().enumerate() {
            let got = anomaly_score(c.y, 10.0, 6.0, 12.0, c.direction, c.min_deviation);
            assert!((got - c.expected).abs() < 1e-12, "case {i}: got {got}, want {}", c.expected);
        }
    }

    #[test]
    fn zero_width_band_is_finite() {
        assert_eq!(anomaly_score(1.0, 0.0, 0.0, 0.0, Direction::Both, 0.0), MAX_SCORE);
        assert_eq!(anomaly_score(0.0, 0.0, 0.0, 0.0, Direction::Both, 0.0), 0.0);
    }

    #[test]
    fn extreme_finite_values_score_by_their_distance() {
        // (y, yhat, lower, upper, expected): differences that overflow f64 must not read as "no deviation"
        let cases = [
            // 2e308 away from the prediction, with a band of half-width 1e307 above it
            (1e308, -1e308, -1.1e308, -0.9e308, 20.0),
            // at the edge of a band wider than f64::MAX
            (1e308, -1e308, -1.5e308, 1e308, 1.0),
            (-1e308, 1e308, -1e308, 1.5e308, 1.0),
            // the largest deviation there is, against a zero-width band
            (f64::MAX, -f64::MAX, -f64::MAX, -f64::MAX, MAX_SCORE),
            (-f64::MAX, f64::MAX, f64::MAX, f64::MAX, MAX_SCORE),
        ];
        for (y, yhat, lower, upper, expected) in cases {
            let got = anomaly_score(y, yhat, lower, upper, Direction::Both, 0.0);
            assert!((got - expected).abs() <= 1e-9 * expected, "score({y:e}, {yhat:e}, [{lower:e}, {upper:e}]) = {got}, want {expected}");
        }
        // the guards still apply
        assert_eq!(anomaly_score(-f64::MAX, f64::MAX, f64::MAX, f64::MAX, Direction::Above, 0.0), 0.0);
        assert_eq!(anomaly_score(f64::MAX, -f64::MAX, -f64::MAX, -f64::MAX, Direction::Above, f64::MAX), MAX_SCORE);
        assert_eq!(anomaly_score(1e308, 9e307, 9e307, 9e307, Direction::Both, f64::MAX), 0.0);
    }

    proptest! {
        #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn a_larger_deviation_never_scores_lower(yhat in -1e308f64..1e308, half in 0.0f64..1e308, a in 0.0f64..1.0, b in 0.0f64..1.0) {
            // deviations up to the farthest finite value above the prediction
            let room = f64::MAX / 2.0 - yhat / 2.0;
            let (near, far) = (yhat + a.min(b) * room * 2.0, yhat + a.max(b) * room * 2.0);
            let (near, far) = (near.min(f64::MAX), far.min(f64::MAX));
            let band = |y: f64| anomaly_score(y, yhat, yhat - half, yhat + half, Direction::Both, 0.0);
            prop_assert!(band(near) <= band(far), "{} > {}", band(near), band(far));
        }
    }

    proptest! {
        #[test]
        fn never_nan_or_infinite(y in proptest::num::f64::ANY, yhat in proptest::num::f64::ANY,
                                 lo in proptest::num::f64::ANY, hi in proptest::num::f64::ANY) {
            let s = anomaly_score(y, yhat, lo, hi, Direction::Both, 0.0);
            prop_assert!(s.is_finite() && s >= 0.0);
        }
    }
}
