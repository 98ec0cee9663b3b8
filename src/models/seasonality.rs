//! Finding a series' seasons in its own history: is there a daily pattern, a weekly one, both
//! or none?
//!
//! A season of `p` steps shows as a high correlation between the series and itself `p` steps
//! later. A trend or a slow wander also correlates at every lag, so two things are checked on
//! the series with its trend removed (minus its centred moving average over `p`): the
//! correlation at `p` is high, and clearly higher than at a lag where a season of `p` would not
//! repeat: half a day for the daily season (the opposite side of the day), six days for the
//! weekly one (a different day of the week, which a daily pattern alone cannot tell apart from
//! the same day). Each needs two periods of history.

/// The correlation at the season's lag needed to call it a season.
const MIN_CORRELATION: f64 = 0.3;
/// How much higher the correlation must be at the season's lag than at the control lag.
const MIN_MARGIN: f64 = 0.1;

const DAY: i64 = 86_400;

/// The seasons found in `y` (samples `step_secs` apart), in steps, shortest first: empty,
/// `[day]`, `[week]` or `[day, week]`.
pub fn find_seasons(y: &[f64], step_secs: i64) -> Vec<usize> {
    if step_secs <= 0 || DAY % step_secs != 0 || DAY / step_secs < 4 {
        return Vec::new();
    }
    let day = (DAY / step_secs) as usize;
    let week = 7 * day;
    let mut seasons = Vec::new();
    if is_season(y, day, day / 2) {
        seasons.push(day);
    }
    if is_season(y, week, week - day) {
        seasons.push(week);
    }
    seasons
}

/// Whether `y` repeats every `period` steps, checked against the `control` lag.
fn is_season(y: &[f64], period: usize, control: usize) -> bool {
    if y.len() < 2 * period {
        return false;
    }
    let detrended = minus_moving_average(y, period);
    let at_period = correlation(&detrended, period);
    at_period >= MIN_CORRELATION && at_period - correlation(&detrended, control) >= MIN_MARGIN
}

/// `y` minus its moving average over `width` samples, centred where the series allows.
fn minus_moving_average(y: &[f64], width: usize) -> Vec<f64> {
    let n = y.len();
    let mut prefix = Vec::with_capacity(n + 1);
    prefix.push(0.0);
    for v in y {
        prefix.push(prefix.last().copied().unwrap_or(0.0) + v);
    }
    (0..n)
        .map(|i| {
            let from = i.saturating_sub(width / 2).min(n - width);
            y[i] - (prefix[from + width] - prefix[from]) / width as f64
        })
        .collect()
}

/// Pearson correlation of `x` with itself `lag` steps later; 0 when either part is constant.
fn correlation(x: &[f64], lag: usize) -> f64 {
    if lag >= x.len() {
        return 0.0;
    }
    let (a, b) = (&x[..x.len() - lag], &x[lag..]);
    let n = a.len() as f64;
    let (ma, mb) = (a.iter().sum::<f64>() / n, b.iter().sum::<f64>() / n);
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for (u, v) in a.iter().zip(b) {
        sab += (u - ma) * (v - mb);
        saa += (u - ma) * (u - ma);
        sbb += (v - mb) * (v - mb);
    }
    if saa > 0.0 && sbb > 0.0 {
        sab / (saa * sbb).sqrt()
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::testing::noise;

    const HOUR: i64 = 3600;

    fn nab(file: &str) -> Vec<f64> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/datasets/nab-dev").join(file);
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        text.lines().skip(1).map(|line| line.rsplit(',').next().unwrap().trim().parse().unwrap()).collect()
    }

    #[test]
    fn hand_made_series() {
        let daily = |i: usize| (i as f64 * std::f64::consts::TAU / 24.0).sin();
        // hourly samples over four weeks
        let n = 24 * 28;
        type Case = (&'static str, Box<dyn Fn(usize) -> f64>, Vec<usize>);
        let cases: [Case; 6] = [
            ("flat", Box::new(|_| 5.0), vec![]),
            ("noise", Box::new(noise), vec![]),
            ("daily wave with noise", Box::new(move |i| daily(i) + 0.5 * noise(i)), vec![24]),
            // a trend alone correlates at every lag, and is not a season
            ("trend", Box::new(|i| i as f64 + noise(i)), vec![]),
            ("daily wave on a trend", Box::new(move |i| 0.05 * i as f64 + daily(i)), vec![24]),
            // weekends at half the level: daily and weekly
            ("weekdays and weekends", Box::new(move |i| (2.0 + daily(i)) * if (i / 24) % 7 >= 5 { 0.5 } else { 1.0 }), vec![24, 168]),
        ];
        for (name, f, expected) in cases {
            let y: Vec<f64> = (0..n).map(f).collect();
            assert_eq!(find_seasons(&y, HOUR), expected, "{name}");
        }
        // a random walk wanders, it does not repeat
        let mut walk = vec![0.0];
        for i in 1..n {
            walk.push(walk[i - 1] + noise(i));
        }
        assert_eq!(find_seasons(&walk, HOUR), Vec::<usize>::new(), "random walk");
    }

    #[test]
    fn needs_two_periods_and_a_step_that_divides_the_day() {
        let daily: Vec<f64> = (0..24 * 13).map(|i| (i as f64 * std::f64::consts::TAU / 24.0).sin()).collect();
        // 13 days: daily, but not enough for a weekly check
        assert_eq!(find_seasons(&daily, HOUR), vec![24]);
        assert_eq!(find_seasons(&daily[..47], HOUR), Vec::<usize>::new());
        assert_eq!(find_seasons(&daily, 7 * 60), Vec::<usize>::new(), "7 minutes do not divide a day");
    }

    #[test]
    fn nab_series() {
        // nyc_taxi: 30-minute steps, a daily rhythm and quieter weekends
        assert_eq!(find_seasons(&nab("realKnownCause/nyc_taxi.csv"), 1800), vec![48, 336]);
        assert_eq!(find_seasons(&nab("artificialNoAnomaly/art_noisy.csv"), 300), Vec::<usize>::new());
        assert_eq!(find_seasons(&nab("artificialNoAnomaly/art_daily_small_noise.csv"), 300), vec![288]);
        assert_eq!(find_seasons(&nab("artificialNoAnomaly/art_flatline.csv"), 300), Vec::<usize>::new());
    }
}
