//! An ensemble's point for a sample, from its members' points of that sample ([`Combine`]).
//!
//! `min`, `max` and `vote` are order statistics of the members' scores: one member decides, and
//! its prediction and band are exported with its score, so that the band drawn is the one the
//! score was measured against. `mean` averages scores, predictions and band edges.

use crate::config::Combine;
use crate::exporter::Point;

impl Combine {
    /// The ensemble's point from its members' points of one sample (in member order, at least
    /// one). Ties go to the earlier member.
    pub fn point(self, members: &[Point]) -> Point {
        let n = members.len();
        assert!(n > 0, "an ensemble has at least one member");
        if self == Combine::Mean {
            let mean = |value: fn(&Point) -> f64| members.iter().map(|p| value(p) / n as f64).sum::<f64>();
            return Point {
                yhat: mean(|p| p.yhat),
                lower: mean(|p| p.lower),
                upper: mean(|p| p.upper),
                score: mean(|p| p.score),
                ..members[0]
            };
        }
        // Members by score, highest first (lowest first for `min`, which takes the first); the
        // stable sort keeps ties in member order.
        let mut ranked: Vec<&Point> = members.iter().collect();
        if self == Combine::Min {
            ranked.sort_by(|a, b| a.score.total_cmp(&b.score));
        } else {
            ranked.sort_by(|a, b| b.score.total_cmp(&a.score));
        }
        let decides = match self {
            Combine::Min | Combine::Max => 0,
            // The (n/2 + 1)-th highest: more than half of the members score at least this much.
            Combine::Vote | Combine::Mean => n / 2,
        };
        *ranked[decides]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(yhat: f64, score: f64) -> Point {
        Point { ts: 60, y: 10.0, yhat, lower: yhat - 1.0, upper: yhat + 1.0, score }
    }

    #[test]
    fn one_member_is_its_own_ensemble() {
        let p = point(9.0, 1.5);
        for how in [Combine::Min, Combine::Max, Combine::Mean, Combine::Vote] {
            assert_eq!(how.point(&[p]), p, "{how:?}");
        }
    }

    #[test]
    fn order_statistics_by_hand() {
        // scores 0.5, 3.0, 1.5: max is the second member, min the first, a vote of 3 the
        // second highest (1.5, the third member): two of three are at least 1.5.
        let members = [point(9.5, 0.5), point(7.0, 3.0), point(8.5, 1.5)];
        assert_eq!(Combine::Max.point(&members), members[1]);
        assert_eq!(Combine::Min.point(&members), members[0]);
        assert_eq!(Combine::Vote.point(&members), members[2]);
        // Of two, a strict majority is both: the vote is the lower score.
        assert_eq!(Combine::Vote.point(&members[..2]), members[0]);
        // Of four, three: the third highest.
        let four = [point(1.0, 4.0), point(2.0, 0.0), point(3.0, 2.0), point(4.0, 1.0)];
        assert_eq!(Combine::Vote.point(&four), four[3]);
        // Ties go to the earlier member.
        let tied = [point(1.0, 2.0), point(2.0, 2.0)];
        assert_eq!(Combine::Max.point(&tied).yhat, 1.0);
        assert_eq!(Combine::Min.point(&tied).yhat, 1.0);
    }

    #[test]
    fn mean_by_hand() {
        let members = [point(9.0, 0.5), point(7.0, 3.0), point(8.0, 1.0)];
        let mean = Combine::Mean.point(&members);
        assert_eq!((mean.ts, mean.y), (60, 10.0));
        assert_eq!((mean.yhat, mean.lower, mean.upper), (8.0, 7.0, 9.0));
        assert_eq!(mean.score, 1.5);
        // No overflow at the ends of the range.
        let huge = [point(f64::MAX, 0.0), point(f64::MAX, 0.0)];
        assert_eq!(Combine::Mean.point(&huge).yhat, f64::MAX);
    }
}
