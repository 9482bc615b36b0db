//! SVG plots of runs (plotters' SVG backend only: no fonts to rasterise, no bitmaps).

use std::path::Path;

use plotters::prelude::*;

use crate::report::Report;

/// A plotting failure, as text (plotters' error types are generic over the backend).
pub type PlotError = String;

const COLOURS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

/// Draws every series with its legend on a chart (a macro: the log and linear charts are of
/// different types).
macro_rules! draw_lines {
    ($chart:expr, $series:expr) => {{
        for (i, s) in $series.iter().enumerate() {
            let colour = COLOURS[i % COLOURS.len()];
            $chart
                .draw_series(LineSeries::new(
                    s.points.iter().copied(),
                    colour.stroke_width(2),
                ))
                .map_err(|e| e.to_string())?
                .label(s.label.clone())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2))
                });
        }
        $chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .position(SeriesLabelPosition::LowerRight)
            .draw()
            .map_err(|e| e.to_string())?;
    }};
}

/// One named line of (x, y) points.
pub struct Series {
    /// Legend label.
    pub label: String,
    /// The points, in x order.
    pub points: Vec<(f64, f64)>,
}

/// Lines on one chart; `log_x` for a logarithmic x axis.
pub fn lines(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
    log_x: bool,
) -> Result<(), PlotError> {
    let err = |e: &dyn std::fmt::Display| e.to_string();
    let all = series.iter().flat_map(|s| s.points.iter());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in all {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if x0 > x1 {
        return Err("nothing to plot".to_owned());
    }
    let pad = ((y1 - y0) * 0.05).max(1e-9);
    let (y0, y1) = (y0 - pad, y1 + pad);
    let x1 = if x1 > x0 { x1 } else { x0 + 1.0 };
    let root = SVGBackend::new(path, (800, 500)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut builder = ChartBuilder::on(&root);
    builder
        .caption(title, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(70);
    if log_x {
        let mut chart = builder
            .build_cartesian_2d((x0.max(1e-3)..x1).log_scale(), y0..y1)
            .map_err(|e| err(&e))?;
        chart
            .configure_mesh()
            .x_desc(x_label)
            .y_desc(y_label)
            .draw()
            .map_err(|e| err(&e))?;
        draw_lines!(chart, series);
    } else {
        let mut chart = builder
            .build_cartesian_2d(x0..x1, y0..y1)
            .map_err(|e| err(&e))?;
        chart
            .configure_mesh()
            .x_desc(x_label)
            .y_desc(y_label)
            .draw()
            .map_err(|e| err(&e))?;
        draw_lines!(chart, series);
    }
    root.present().map_err(|e| err(&e))
}

/// The latency CDF of each report (x: ms, log scale; y: share of lookups done).
pub fn latency_cdf(path: &Path, title: &str, reports: &[Report]) -> Result<(), PlotError> {
    let series: Vec<Series> = reports
        .iter()
        .map(|r| {
            let n = r.latencies_ms.len().max(1) as f64;
            // At most 400 points: enough for a smooth curve, a small SVG.
            let step = (r.latencies_ms.len() / 400).max(1);
            let mut points: Vec<(f64, f64)> = r
                .latencies_ms
                .iter()
                .enumerate()
                .step_by(step)
                .map(|(i, &ms)| (ms.max(0.01), (i + 1) as f64 / n))
                .collect();
            if let Some(&last) = r.latencies_ms.last() {
                points.push((last.max(0.01), 1.0));
            }
            Series {
                label: format!("{} {}", r.scenario, r.variant),
                points,
            }
        })
        .collect();
    lines(
        path,
        title,
        "lookup latency (ms)",
        "share of lookups",
        &series,
        true,
    )
}
