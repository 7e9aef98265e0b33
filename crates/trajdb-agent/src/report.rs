//! `bootstrap --report DIR`: a self-contained HTML page of one run (no scripts, no external
//! files): the learning curve (test success against successful trajectories in the database,
//! read through as-of views; mean over seeds with a ±1 sd bar, and each seed's points) and
//! the task-success predictor's calibration plot, both drawn as inline SVG with `plotters`,
//! plus the run's settings and figures. `report.json` beside it holds the report the page was
//! drawn from (the same object `--json` prints).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use plotters::prelude::*;

use crate::bootstrap::{summary, BootstrapReport};
use crate::{AgentError, AgentResult};

/// Width and height of each plot, in pixels.
pub const PLOT_SIZE: (u32, u32) = (640, 400);

/// One point of the mean learning curve: successes in the database, mean test success, its
/// sample standard deviation over the seeds that reached the point, and how many did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CurvePoint {
    /// Successful trajectories in the database (for the final point: the mean over seeds).
    pub x: f64,
    /// Mean test success (0-1).
    pub mean: f64,
    /// Sample standard deviation over seeds (0 with one seed).
    pub sd: f64,
    /// Seeds at this point.
    pub n: usize,
}

fn mean_sd(v: &[f64]) -> (f64, f64) {
    if v.is_empty() {
        return (0.0, 0.0);
    }
    let n = v.len() as f64;
    let m = v.iter().sum::<f64>() / n;
    let sd = if v.len() > 1 {
        (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0)).sqrt()
    } else {
        0.0
    };
    (m, sd)
}

/// The mean learning curve from the per-seed curves of `r`: every checkpoint any seed
/// reached (its last point excluded), then the final databases' point (mean successes, mean
/// test success after).
pub fn mean_curve(r: &BootstrapReport) -> Vec<CurvePoint> {
    let mut at: BTreeMap<usize, Vec<f64>> = BTreeMap::new();
    let mut finals_x = Vec::new();
    let mut finals_y = Vec::new();
    for c in &r.curves {
        let Some((last, rest)) = c.split_last() else {
            continue;
        };
        for &(x, y) in rest {
            at.entry(x).or_default().push(y);
        }
        finals_x.push(last.0 as f64);
        finals_y.push(last.1);
    }
    let mut out: Vec<CurvePoint> = at
        .into_iter()
        .map(|(x, ys)| {
            let (mean, sd) = mean_sd(&ys);
            CurvePoint {
                x: x as f64,
                mean,
                sd,
                n: ys.len(),
            }
        })
        .collect();
    if !finals_x.is_empty() {
        let (mean, sd) = mean_sd(&finals_y);
        out.push(CurvePoint {
            x: mean_sd(&finals_x).0,
            mean,
            sd,
            n: finals_y.len(),
        });
    }
    out
}

fn plot_error(what: &str, e: impl std::fmt::Display) -> AgentError {
    AgentError::Env(format!("report: cannot draw the {what}: {e}"))
}

/// The learning curve as an SVG document: the mean as a line with a filled circle per point
/// (radius 4, in order), a ±1 sd bar at each point, and each seed's points as small open
/// circles (radius 2).
pub fn learning_curve_svg(r: &BootstrapReport) -> AgentResult<String> {
    let points = mean_curve(r);
    let x_max = points
        .iter()
        .map(|p| p.x)
        .chain(r.curves.iter().flatten().map(|p| p.0 as f64))
        .fold(1.0f64, f64::max)
        * 1.05;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, PLOT_SIZE).into_drawing_area();
        root.fill(&WHITE)
            .map_err(|e| plot_error("learning curve", e))?;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                format!(
                    "{}: test success vs successes in the database",
                    r.method.name()
                ),
                ("sans-serif", 18),
            )
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d(0f64..x_max, 0f64..100f64)
            .map_err(|e| plot_error("learning curve", e))?;
        chart
            .configure_mesh()
            .x_desc("successful trajectories in the database")
            .y_desc("test success (%)")
            .draw()
            .map_err(|e| plot_error("learning curve", e))?;
        let grey = RGBColor(150, 150, 150);
        for c in &r.curves {
            chart
                .draw_series(
                    c.iter()
                        .map(|&(x, y)| Circle::new((x as f64, 100.0 * y), 2, grey.stroke_width(1))),
                )
                .map_err(|e| plot_error("learning curve", e))?;
        }
        for p in &points {
            let lo = (100.0 * (p.mean - p.sd)).max(0.0);
            let hi = (100.0 * (p.mean + p.sd)).min(100.0);
            chart
                .draw_series(std::iter::once(PathElement::new(
                    vec![(p.x, lo), (p.x, hi)],
                    BLUE.mix(0.5).stroke_width(2),
                )))
                .map_err(|e| plot_error("learning curve", e))?;
        }
        chart
            .draw_series(LineSeries::new(
                points.iter().map(|p| (p.x, 100.0 * p.mean)),
                BLUE.stroke_width(2),
            ))
            .map_err(|e| plot_error("learning curve", e))?;
        chart
            .draw_series(
                points
                    .iter()
                    .map(|p| Circle::new((p.x, 100.0 * p.mean), 4, BLUE.filled())),
            )
            .map_err(|e| plot_error("learning curve", e))?;
        root.present()
            .map_err(|e| plot_error("learning curve", e))?;
    }
    Ok(svg)
}

/// The calibration plot as an SVG document: mean predicted probability (x) against observed
/// success (y) per bin with at least one task, one filled circle (radius 5) per bin in bin
/// order, and the diagonal of perfect calibration.
pub fn calibration_svg(r: &BootstrapReport) -> AgentResult<String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, PLOT_SIZE).into_drawing_area();
        root.fill(&WHITE)
            .map_err(|e| plot_error("calibration plot", e))?;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                "task-success predictor: calibration (pooled over seeds)",
                ("sans-serif", 18),
            )
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d(0f64..100f64, 0f64..100f64)
            .map_err(|e| plot_error("calibration plot", e))?;
        chart
            .configure_mesh()
            .x_desc("mean predicted success (%)")
            .y_desc("observed success (%)")
            .draw()
            .map_err(|e| plot_error("calibration plot", e))?;
        chart
            .draw_series(std::iter::once(PathElement::new(
                vec![(0.0, 0.0), (100.0, 100.0)],
                RGBColor(150, 150, 150).stroke_width(1),
            )))
            .map_err(|e| plot_error("calibration plot", e))?;
        chart
            .draw_series(
                r.predictor
                    .calibration
                    .iter()
                    .filter(|b| b.count > 0)
                    .map(|b| {
                        Circle::new(
                            (100.0 * b.mean_predicted, 100.0 * b.observed),
                            5,
                            RED.filled(),
                        )
                    }),
            )
            .map_err(|e| plot_error("calibration plot", e))?;
        root.present()
            .map_err(|e| plot_error("calibration plot", e))?;
    }
    Ok(svg)
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The HTML page of a report (self-contained: inline SVG and CSS, no scripts).
pub fn html(r: &BootstrapReport) -> AgentResult<String> {
    let curve = learning_curve_svg(r)?;
    let calib = calibration_svg(r)?;
    let mut page = String::new();
    let title = format!("trajdb bootstrap: {} on {}", r.method.name(), r.env);
    let _ = write!(
        page,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title>\
         <style>body{{font-family:sans-serif;max-width:700px;margin:2em auto}}\
         pre{{background:#f4f4f4;padding:1em;white-space:pre-wrap}}\
         table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:2px 8px;text-align:right}}</style>\
         </head><body>\n<h1>{}</h1>\n<pre>{}</pre>\n<h2>Learning curve</h2>\n\
         <p>Test success of the final database read as of the commit where it held N \
         successful trajectories (mean over seeds, bar: ±1 sd; grey: each seed).</p>\n\
         <div id=\"learning-curve\">{curve}</div>\n<h2>Calibration</h2>\n\
         <p>Bins of predicted probability; AUROC and calibration are this run's own \
         measurements.</p>\n<div id=\"calibration\">{calib}</div>\n",
        escape(&title),
        escape(&title),
        escape(&summary(r)),
    );
    page.push_str(
        "<table><tr><th>bin</th><th>tasks</th><th>mean predicted</th><th>observed</th></tr>\n",
    );
    for b in &r.predictor.calibration {
        let _ = writeln!(
            page,
            "<tr><td>{:.1}-{:.1}</td><td>{}</td><td>{:.1}%</td><td>{:.1}%</td></tr>",
            b.lo,
            b.hi,
            b.count,
            100.0 * b.mean_predicted,
            100.0 * b.observed
        );
    }
    page.push_str("</table>\n<p>The report's data: <code>report.json</code> beside this page.</p>\n</body></html>\n");
    Ok(page)
}

/// Writes `index.html` and `report.json` into `dir` (created if absent) and returns the
/// page's path.
pub fn write(r: &BootstrapReport, dir: &Path) -> AgentResult<PathBuf> {
    let io = |op: &'static str, path: &Path| {
        let path = path.display().to_string();
        move |source: std::io::Error| AgentError::Io { op, path, source }
    };
    std::fs::create_dir_all(dir).map_err(io("create", dir))?;
    let json = serde_json::to_string_pretty(r)
        .map_err(|e| AgentError::Env(format!("report: cannot encode JSON: {e}")))?;
    let json_path = dir.join("report.json");
    std::fs::write(&json_path, json).map_err(io("write", &json_path))?;
    let page = dir.join("index.html");
    std::fs::write(&page, html(r)?).map_err(io("write", &page))?;
    Ok(page)
}
