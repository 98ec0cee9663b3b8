//! One SVG per series: the value, the predicted band and yhat, the flagged rows, the labelled
//! windows shaded, and the holdout forecast with its band.

use std::path::Path;

use plotters::prelude::*;

use super::accuracy::Holdout;
use super::replay::Trace;
use crate::nab::Window;

const WINDOW: RGBColor = RGBColor(255, 200, 200);
const BAND: RGBColor = RGBColor(160, 200, 240);
const FORECAST: RGBColor = RGBColor(140, 60, 170);

/// A plot that could not be drawn or written.
#[derive(Debug, thiserror::Error)]
#[error("drawing {}: {message}", path.display())]
pub struct PlotError {
    /// The SVG file.
    pub path: std::path::PathBuf,
    /// plotters' description.
    pub message: String,
}

/// Draws `trace` (and `holdout`, if any) to an SVG file at `path`.
///
/// # Errors
/// Drawing or I/O errors.
pub fn draw(path: &Path, trace: &Trace, windows: &[Window], holdout: Option<&Holdout>) -> Result<(), PlotError> {
    let rec = &trace.recording;
    let n = rec.values.len();
    let (lo, hi) = rec.values.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)));
    let margin = ((hi - lo) * 0.15).max(1e-9);
    let (lo, hi) = (lo - margin, hi + margin);
    // Bands can be far wider than the data; clip them to the plotted range.
    let clip = |v: f64| v.clamp(lo, hi);

    let root = SVGBackend::new(path, (1400, 450)).into_drawing_area();
    let err = |e: DrawingAreaErrorKind<_>| PlotError { path: path.to_path_buf(), message: e.to_string() };
    root.fill(&WHITE).map_err(err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(&rec.key, ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..n as f64, lo..hi)
        .map_err(err)?;
    let label_at = |x: &f64| rec.timestamps.get(*x as usize).map(|t| t.format("%m-%d %H:%M").to_string()).unwrap_or_default();
    chart.configure_mesh().x_labels(10).x_label_formatter(&label_at).light_line_style(WHITE.mix(0.0)).draw().map_err(err)?;

    // labelled windows
    for w in windows {
        let rows: Vec<usize> = (0..n).filter(|&i| w.start <= rec.timestamps[i] && rec.timestamps[i] <= w.end).collect();
        if let (Some(&a), Some(&b)) = (rows.first(), rows.last()) {
            chart
                .draw_series(std::iter::once(Rectangle::new([(a as f64, lo), (b as f64 + 1.0, hi)], WINDOW.mix(0.5).filled())))
                .map_err(err)?;
        }
    }
    // the band, one polygon per run of scored rows
    let mut run: Vec<(usize, f64, f64)> = Vec::new();
    let mut polygons = Vec::new();
    for (i, p) in trace.points.iter().enumerate().chain(std::iter::once((n, &None))) {
        match p {
            // a detector's points have no band (NaN)
            Some(p) if !(p.lower.is_nan() || p.upper.is_nan()) => run.push((i, clip(p.lower), clip(p.upper))),
            _ if !run.is_empty() => polygons.push(band_polygon(&std::mem::take(&mut run))),
            _ => {}
        }
    }
    chart
        .draw_series(polygons.into_iter().map(|pts| Polygon::new(pts, BAND.mix(0.6).filled())))
        .map_err(err)?
        .label("band")
        .legend(|(x, y)| Rectangle::new([(x, y - 4), (x + 16, y + 4)], BAND.filled()));
    chart
        .draw_series(LineSeries::new(
            trace.points.iter().enumerate().filter_map(|(i, p)| p.filter(|p| !p.yhat.is_nan()).map(|p| (i as f64, clip(p.yhat)))),
            BLUE.stroke_width(1),
        ))
        .map_err(err)?
        .label("yhat")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 16, y)], BLUE));
    chart
        .draw_series(LineSeries::new(rec.values.iter().enumerate().map(|(i, &v)| (i as f64, v)), BLACK.stroke_width(1)))
        .map_err(err)?
        .label("value")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 16, y)], BLACK));
    if let Some(h) = holdout {
        let at = |k: usize| (h.first_row + k) as f64;
        let run: Vec<(usize, f64, f64)> =
            (0..h.path.len()).map(|k| (h.first_row + k, clip(h.path.lower[k]), clip(h.path.upper[k]))).collect();
        chart.draw_series(std::iter::once(Polygon::new(band_polygon(&run), FORECAST.mix(0.15).filled()))).map_err(err)?;
        chart
            .draw_series(LineSeries::new((0..h.path.len()).map(|k| (at(k), clip(h.path.point[k]))), FORECAST.stroke_width(2)))
            .map_err(err)?
            .label("holdout forecast")
            .legend(|(x, y)| PathElement::new([(x, y), (x + 16, y)], FORECAST.stroke_width(2)));
    }
    chart
        .draw_series(
            trace
                .points
                .iter()
                .enumerate()
                .filter_map(|(i, p)| p.filter(|p| p.score >= 1.0).map(|p| Circle::new((i as f64, p.y), 3, RED.filled()))),
        )
        .map_err(err)?
        .label("score ≥ 1")
        .legend(|(x, y)| Circle::new((x + 8, y), 3, RED.filled()));
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)
}

/// The outline of a band: along the upper edge, back along the lower one.
fn band_polygon(run: &[(usize, f64, f64)]) -> Vec<(f64, f64)> {
    let upper = run.iter().map(|&(i, _, u)| (i as f64, u));
    let lower = run.iter().rev().map(|&(i, l, _)| (i as f64, l));
    upper.chain(lower).collect()
}
