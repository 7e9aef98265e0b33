//! `bootstrap --report`: the SVG plots show exactly the report's data points.
#![allow(clippy::unwrap_used, reason = "a test fails loudly on any error")]

use clap::Parser;
use trajdb_agent::bootstrap::{run, BootstrapArgs};
use trajdb_agent::report::{calibration_svg, learning_curve_svg, mean_curve, write};

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: BootstrapArgs,
}

/// (cx, cy) of every `<circle ... r="R" ...>` of `svg`, in document order.
fn circles(svg: &str, r: &str) -> Vec<(f64, f64)> {
    let attr = |tag: &str, name: &str| -> Option<f64> {
        let key = format!(" {name}=\"");
        let start = tag.find(&key)? + key.len();
        let end = start + tag[start..].find('"')?;
        tag[start..end].parse().ok()
    };
    svg.split("<circle")
        .skip(1)
        .map(|rest| &rest[..rest.find('>').unwrap()])
        .filter(|tag| tag.contains(&format!(" r=\"{r}\"")))
        .map(|tag| (attr(tag, "cx").unwrap(), attr(tag, "cy").unwrap()))
        .collect()
}

/// Checks that `pixels` are `data` under one increasing affine map on x and one decreasing
/// on y (SVG's y grows downwards), within the 1-pixel rounding of the SVG backend.
fn same_points(data: &[(f64, f64)], pixels: &[(f64, f64)]) {
    assert_eq!(data.len(), pixels.len(), "{data:?} vs {pixels:?}");
    for axis in 0..2 {
        let get = |p: &(f64, f64)| if axis == 0 { p.0 } else { p.1 };
        let (lo, hi) = (0..data.len()).fold((0, 0), |(lo, hi), i| {
            (
                if get(&data[i]) < get(&data[lo]) {
                    i
                } else {
                    lo
                },
                if get(&data[i]) > get(&data[hi]) {
                    i
                } else {
                    hi
                },
            )
        });
        let span = get(&data[hi]) - get(&data[lo]);
        if span < 1e-9 {
            // One value: every point on one pixel line.
            assert!(pixels
                .iter()
                .all(|p| (get(p) - get(&pixels[lo])).abs() <= 1.0));
            continue;
        }
        let slope = (get(&pixels[hi]) - get(&pixels[lo])) / span;
        assert!(
            if axis == 0 { slope > 0.0 } else { slope < 0.0 },
            "axis {axis}"
        );
        for (d, p) in data.iter().zip(pixels) {
            let want = get(&pixels[lo]) + slope * (get(d) - get(&data[lo]));
            assert!(
                (want - get(p)).abs() <= 1.5,
                "axis {axis}: {d:?} drawn at {p:?}, expected {want}"
            );
        }
    }
}

#[test]
fn report_svgs_plot_the_json_points_and_the_page_is_self_contained() {
    let args = Cli::try_parse_from([
        "bootstrap",
        "--method",
        "traj-bootstrap",
        "--train",
        "40",
        "--test",
        "40",
        "--seeds",
        "2",
    ])
    .unwrap()
    .args;
    let r = run(&args).unwrap();
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("trajdb-report-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let page = write(&r, &dir).unwrap();
    // The JSON beside the page is the report.
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).unwrap()).unwrap();
    let after = json["test_success_after"].as_f64().unwrap();
    assert!((after - r.test_success_after).abs() < 1e-12);
    let curves: Vec<Vec<(usize, f64)>> = serde_json::from_value(json["curves"].clone()).unwrap();
    assert_eq!(curves.len(), r.curves.len());
    for (a, b) in curves.iter().flatten().zip(r.curves.iter().flatten()) {
        assert!(a.0 == b.0 && (a.1 - b.1).abs() < 1e-12);
    }

    // Learning curve: mean points (r=4) are the mean curve; seed points (r=2) each seed's.
    let svg = learning_curve_svg(&r).unwrap();
    let mean: Vec<(f64, f64)> = mean_curve(&r)
        .iter()
        .map(|p| (p.x, 100.0 * p.mean))
        .collect();
    assert!(mean.len() >= 2);
    same_points(&mean, &circles(&svg, "4"));
    let seeds: Vec<(f64, f64)> = curves
        .iter()
        .flatten()
        .map(|&(x, y)| (x as f64, 100.0 * y))
        .collect();
    same_points(&seeds, &circles(&svg, "2"));
    // The final mean point is "after" at the mean number of stored successes.
    let last = mean.last().unwrap();
    assert!((last.1 - 100.0 * r.test_success_after).abs() < 1e-9);

    // Calibration: one point per non-empty bin.
    let svg = calibration_svg(&r).unwrap();
    let bins: Vec<(f64, f64)> = json["predictor"]["calibration"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["count"].as_u64() > Some(0))
        .map(|b| {
            (
                100.0 * b["mean_predicted"].as_f64().unwrap(),
                100.0 * b["observed"].as_f64().unwrap(),
            )
        })
        .collect();
    assert!(!bins.is_empty());
    same_points(&bins, &circles(&svg, "5"));

    // Self-contained: inline SVG, no scripts, no external references.
    let html = std::fs::read_to_string(page).unwrap();
    assert_eq!(html.matches("<svg").count(), 2);
    // (The only URL is the SVG namespace, which is not fetched.)
    for forbidden in ["<script", "src=", "href=", "url(", "@import"] {
        assert!(!html.contains(forbidden), "{forbidden}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
