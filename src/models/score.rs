//! The anomaly score: 0 on the prediction, 1 at the band's edge, growing beyond it.

use crate::config::Direction;

/// Largest score exported: keeps a zero-width band from producing infinity.
pub(crate) const MAX_SCORE: f64 = 1e9;

/// Scores observation `y` against prediction `yhat` and its band `[lower, upper]`.
///
/// The deviation is divided by the half-width of the band on its own side, so 1 is the band's
/// edge. Deviations that the `direction` guard ignores, or smaller than `min_deviation`, score 0.
/// The result is always finite and in `[0, MAX_SCORE]`.
///
/// ```
/// use pulsewatch::config::Direction;
/// use pulsewatch::models::anomaly_score;
/// assert_eq!(anomaly_score(12.0, 10.0, 6.0, 12.0, Direction::Both, 0.0), 1.0);
/// assert_eq!(anomaly_score(8.0, 10.0, 6.0, 12.0, Direction::Both, 0.0), 0.5);
/// assert_eq!(anomaly_score(8.0, 10.0, 6.0, 12.0, Direction::Above, 0.0), 0.0);
/// ```
pub fn anomaly_score(y: f64, yhat: f64, lower: f64, upper: f64, direction: Direction, min_deviation: f64) -> f64 {
    let deviation = y - yhat;
    if !deviation.is_finite() || deviation == 0.0 || deviation.abs() < min_deviation {
        return 0.0;
    }
    let above = deviation > 0.0;
    match (direction, above) {
        (Direction::Above, false) | (Direction::Below, true) => return 0.0,
        _ => {}
    }
    let half_width = if above { upper - yhat } else { yhat - lower };
    // A flat history gives a zero-width band; any deviation from it is then maximally surprising.
    let half_width = if half_width.is_finite() && half_width > 0.0 { half_width } else { f64::MIN_POSITIVE };
    let score = deviation.abs() / half_width;
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

    proptest! {
        #[test]
        fn never_nan_or_infinite(y in proptest::num::f64::ANY, yhat in proptest::num::f64::ANY,
                                 lo in proptest::num::f64::ANY, hi in proptest::num::f64::ANY) {
            let s = anomaly_score(y, yhat, lo, hi, Direction::Both, 0.0);
            prop_assert!(s.is_finite() && s >= 0.0);
        }
    }
}
