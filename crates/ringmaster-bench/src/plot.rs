//! The scale plot: SIGHUP recycle time and the master's CPU time per recycle against the
//! number of workers, one line per master, as an SVG file (plotters, SVG backend only).

use std::path::Path;

use plotters::prelude::*;

/// One master's points: (workers, recycle seconds) and (workers, CPU seconds per recycle).
/// Sizes whose recycle did not finish have no point but a cross at the time limit.
pub struct Series {
    pub label: String,
    pub recycle: Vec<(f64, f64)>,
    pub cpu: Vec<(f64, f64)>,
    /// (workers, the limit in seconds) of recycles that did not finish.
    pub not_done: Vec<(f64, f64)>,
}

const COLOURS: [RGBColor; 3] = [RGBColor(200, 40, 40), RGBColor(40, 90, 200), BLACK];

/// Draw both panels side by side into `path`.
pub fn write(path: &Path, title: &str, series: &[Series]) -> Result<(), String> {
    let root = SVGBackend::new(path, (1000, 420)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let root = root
        .titled(title, ("sans-serif", 18))
        .map_err(|e| e.to_string())?;
    let (left, right) = root.split_horizontally(500);
    panel(
        &left,
        "SIGHUP until all old workers are gone and all new ready",
        "recycle, s",
        series,
        |s| &s.recycle,
        true,
    )?;
    panel(
        &right,
        "master CPU (user + system) per recycle",
        "CPU, s",
        series,
        |s| &s.cpu,
        false,
    )?;
    root.present().map_err(|e| e.to_string())
}

fn panel(
    area: &DrawingArea<SVGBackend, plotters::coord::Shift>,
    caption: &str,
    y_label: &str,
    series: &[Series],
    points: impl Fn(&Series) -> &Vec<(f64, f64)>,
    with_not_done: bool,
) -> Result<(), String> {
    let crosses = |s: &Series| -> Vec<(f64, f64)> {
        if with_not_done {
            s.not_done.clone()
        } else {
            Vec::new()
        }
    };
    let all = series
        .iter()
        .flat_map(|s| points(s).iter().copied().chain(crosses(s)));
    let x_max = all.clone().map(|p| p.0).fold(1.0, f64::max) * 1.05;
    let y_max = all.map(|p| p.1).fold(0.01, f64::max) * 1.1;
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 14))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(52)
        .build_cartesian_2d(0.0..x_max, 0.0..y_max)
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_desc("workers")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_desc(y_label)
        .draw()
        .map_err(|e| e.to_string())?;
    for (i, s) in series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let pts = points(s).clone();
        chart
            .draw_series(LineSeries::new(pts.clone(), colour.stroke_width(2)))
            .map_err(|e| e.to_string())?
            .label(s.label.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], colour));
        chart
            .draw_series(pts.into_iter().map(|p| Circle::new(p, 3, colour.filled())))
            .map_err(|e| e.to_string())?;
        let marks = crosses(s)
            .into_iter()
            .map(|p| Cross::new(p, 6, colour.stroke_width(2)));
        chart.draw_series(marks).map_err(|e| e.to_string())?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| e.to_string())
}
