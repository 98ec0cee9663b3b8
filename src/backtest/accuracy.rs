//! Forecast accuracy on a holdout: the rule's model fitted on the rows before the holdout, then
//! compared over it with what happened.

use super::data::Recording;
use crate::config::Rule;
use crate::models::{self, Path};

/// How well a forecast matched a holdout.
#[derive(Clone, Debug, PartialEq)]
pub struct Accuracy {
    /// Rows in the holdout.
    pub points: usize,
    /// Mean absolute error.
    pub mae: f64,
    /// Root mean squared error.
    pub rmse: f64,
    /// MAE over the in-sample MAE of the seasonal naive forecast (season: the model's longest,
    /// the one found for `seasonality: auto`, else 1 step); below 1 beats it. `None` when the training data is constant.
    pub mase: Option<f64>,
    /// Share of holdout rows inside the 95% band ([`COVERAGE_LEVEL`]).
    pub coverage: f64,
}

/// The band level whose coverage is measured, whatever the rule's `band`: the 95% interval is
/// what forecast evaluations conventionally report.
pub const COVERAGE_LEVEL: f64 = 0.95;

/// A holdout forecast: where it starts and the path the model predicted.
#[derive(Clone, Debug)]
pub struct Holdout {
    /// First row of the holdout.
    pub first_row: usize,
    /// The forecast over the holdout rows.
    pub path: Path,
    /// Its accuracy.
    pub accuracy: Accuracy,
}

/// Fits `rule`'s model (on at most its `history`) to the rows before the last `fraction` of
/// `recording`, forecasts the rest and scores it. `None` when there is too little data.
///
/// # Errors
/// The model's fit error.
pub fn holdout(rule: &Rule, recording: &Recording, fraction: f64) -> Result<Option<Holdout>, models::Error> {
    let Some(forecast) = rule.forecast() else { return Ok(None) };
    let n = recording.values.len();
    let first_row = n - ((n as f64 * fraction).round() as usize).min(n);
    let from = first_row.saturating_sub(forecast.history_points(&rule.step));
    let train = &recording.values[from..first_row];
    let actual = &recording.values[first_row..];
    if actual.is_empty() || train.len() < forecast.model.min_points(&rule.step) {
        return Ok(None);
    }
    let path = models::fit(&forecast.model, train, recording.ts(from), recording.step, COVERAGE_LEVEL, actual.len())?;
    // The season the model used: with `seasonality: auto`, the one it found in the training data.
    let seasons = match &forecast.model {
        crate::config::ModelSpec::Online { seasonality: crate::config::Seasonality::Auto } => models::find_seasons(train, recording.step),
        model => model.periods(&rule.step),
    };
    let season = seasons.into_iter().max().unwrap_or(1).max(1);
    let accuracy = score(train, actual, &path, season);
    Ok(Some(Holdout { first_row, path, accuracy }))
}

/// Compares `path` with `actual`; `season` scales MASE.
fn score(train: &[f64], actual: &[f64], path: &Path, season: usize) -> Accuracy {
    let n = actual.len().min(path.len());
    let errors: Vec<f64> = (0..n).map(|i| actual[i] - path.point[i]).collect();
    let mae = errors.iter().map(|e| e.abs()).sum::<f64>() / n as f64;
    let rmse = (errors.iter().map(|e| e * e).sum::<f64>() / n as f64).sqrt();
    let naive: Vec<f64> = train.windows(season + 1).map(|w| (w[season] - w[0]).abs()).collect();
    let scale = naive.iter().sum::<f64>() / naive.len().max(1) as f64;
    let inside = (0..n).filter(|&i| path.lower[i] <= actual[i] && actual[i] <= path.upper[i]).count();
    Accuracy { points: n, mae, rmse, mase: (scale > 0.0).then(|| mae / scale), coverage: inside as f64 / n as f64 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_by_hand() {
        let path = Path { point: vec![1.0, 2.0, 3.0, 4.0], lower: vec![0.0, 1.0, 2.0, 3.0], upper: vec![2.0, 3.0, 4.0, 5.0] };
        let actual = [1.0, 4.0, 3.0, 2.0];
        // errors 0, 2, 0, -2: MAE 1, RMSE sqrt(8/4); inside: rows 0 and 2
        // seasonal naive (season 2) on 0,1,3,4: |3-0|, |4-1| -> scale 3
        let acc = score(&[0.0, 1.0, 3.0, 4.0], &actual, &path, 2);
        assert_eq!(acc.points, 4);
        assert_eq!(acc.mae, 1.0);
        assert_eq!(acc.rmse, 2f64.sqrt());
        assert_eq!(acc.mase, Some(1.0 / 3.0));
        assert_eq!(acc.coverage, 0.5);
        assert_eq!(score(&[5.0, 5.0, 5.0], &actual, &path, 1).mase, None);
    }
}
