//! Line charts (ROC curves, training curves) as SVG and PNG, with plotters.
//!
//! Text needs a TrueType font: the first of a few common system fonts found (Debian's `fonts-dejavu-core`,
//! Liberation, or `CHEXLAB_FONT`) is registered once. Without one, plots are skipped with a warning and the report
//! keeps its tables.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::prelude::*;
use plotters::style::{FontStyle, register_font};

use crate::error::{Error, Result};

/// One line of a chart.
#[derive(Clone, Debug)]
pub struct Series {
    /// Legend entry.
    pub name: String,
    /// Points, in drawing order.
    pub points: Vec<(f64, f64)>,
    /// Mark every point with a dot (a series of one point shows only so).
    pub markers: bool,
}

/// What a chart shows.
#[derive(Clone, Debug)]
pub struct Chart<'a> {
    /// Chart title.
    pub title: &'a str,
    /// X axis label.
    pub x_label: &'a str,
    /// Y axis label.
    pub y_label: &'a str,
    /// X axis range.
    pub x: Range<f64>,
    /// Y axis range.
    pub y: Range<f64>,
    /// Draw the y = x chance line (ROC curves).
    pub diagonal: bool,
    /// The curves.
    pub series: &'a [Series],
}

const FONT_PATHS: [&str; 4] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/Library/Fonts/Arial.ttf",
];

/// Registers a system font for plot text once; `None` when there is none.
pub fn font() -> Option<&'static Path> {
    static FONT: OnceLock<Option<PathBuf>> = OnceLock::new();
    FONT.get_or_init(|| {
        let candidates = std::env::var_os("CHEXLAB_FONT")
            .map(PathBuf::from)
            .into_iter()
            .chain(FONT_PATHS.iter().map(PathBuf::from));
        for p in candidates {
            if let Ok(bytes) = std::fs::read(&p) {
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                if register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
                    return Some(p);
                }
            }
        }
        None
    })
    .as_deref()
}

const COLORS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

fn draw<DB: DrawingBackend>(
    root: DrawingArea<DB, plotters::coord::Shift>,
    c: &Chart,
) -> std::result::Result<(), String> {
    let e = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    root.fill(&WHITE).map_err(e)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(c.title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(c.x.clone(), c.y.clone())
        .map_err(e)?;
    chart
        .configure_mesh()
        .x_desc(c.x_label)
        .y_desc(c.y_label)
        .light_line_style(WHITE.mix(0.0))
        .draw()
        .map_err(e)?;
    if c.diagonal {
        let lo = c.x.start.max(c.y.start);
        let hi = c.x.end.min(c.y.end);
        chart
            .draw_series(LineSeries::new(
                [(lo, lo), (hi, hi)],
                BLACK.mix(0.3).stroke_width(1),
            ))
            .map_err(e)?;
    }
    for (i, s) in c.series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        chart
            .draw_series(LineSeries::new(
                s.points.iter().copied(),
                color.stroke_width(2),
            ))
            .map_err(e)?
            .label(&s.name)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], color.stroke_width(2)));
        if s.markers {
            chart
                .draw_series(s.points.iter().map(|&p| Circle::new(p, 5, color.filled())))
                .map_err(e)?;
        }
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .draw()
        .map_err(e)?;
    root.present().map_err(e)
}

/// Writes `<stem>.svg` and `<stem>.png` (800 × 600), each atomically; returns their paths, or nothing (with a
/// warning) when no font is available.
pub fn line_chart(stem: &Path, c: &Chart) -> Result<Vec<PathBuf>> {
    if font().is_none() {
        tracing::warn!(
            "no TrueType font found (install fonts-dejavu-core or set CHEXLAB_FONT): {} skipped",
            stem.display()
        );
        return Ok(Vec::new());
    }
    const W: u32 = 800;
    const H: u32 = 600;
    let fail = |what: &Path, e: String| Error::format(what, format!("plot: {e}"));
    let svg_path = stem.with_extension("svg");
    let mut svg = String::new();
    draw(
        SVGBackend::with_string(&mut svg, (W, H)).into_drawing_area(),
        c,
    )
    .map_err(|e| fail(&svg_path, e))?;
    crate::io::write_atomic(&svg_path, svg.as_bytes())?;
    let png_path = stem.with_extension("png");
    let mut rgb = vec![0u8; (W * H * 3) as usize];
    draw(
        BitMapBackend::with_buffer(&mut rgb, (W, H)).into_drawing_area(),
        c,
    )
    .map_err(|e| fail(&png_path, e))?;
    let img = image::RgbImage::from_raw(W, H, rgb).expect("buffer size");
    let mut png = std::io::Cursor::new(Vec::new());
    img.write_to(&mut png, image::ImageFormat::Png)
        .map_err(|e| fail(&png_path, e.to_string()))?;
    crate::io::write_atomic(&png_path, png.get_ref())?;
    Ok(vec![svg_path, png_path])
}

/// ROC curve points (false-positive rate, true-positive rate) of `scores` against `labels`, one point per distinct
/// score (ties move diagonally, as the AUROC counts them).
pub fn roc_points(scores: &[f32], labels: &[bool]) -> Vec<(f64, f64)> {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let pos = labels.iter().filter(|&&l| l).count().max(1) as f64;
    let neg = labels.iter().filter(|&&l| !l).count().max(1) as f64;
    let (mut tp, mut fp) = (0f64, 0f64);
    let mut pts = vec![(0.0, 0.0)];
    for (k, &i) in idx.iter().enumerate() {
        if labels[i] {
            tp += 1.0;
        } else {
            fp += 1.0;
        }
        if idx.get(k + 1).is_none_or(|&n| scores[n] != scores[i]) {
            pts.push((fp / neg, tp / pos));
        }
    }
    pts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roc_points_run_from_origin_to_one_and_tie_diagonally() {
        let pts = roc_points(&[0.9, 0.8, 0.8, 0.1], &[true, true, false, false]);
        assert_eq!(pts, vec![(0.0, 0.0), (0.0, 0.5), (0.5, 1.0), (1.0, 1.0)]);
    }

    #[test]
    fn charts_are_written_as_svg_and_png() {
        if font().is_none() {
            eprintln!("SKIP: no TrueType font on this machine");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let series = [Series {
            name: "a".into(),
            points: roc_points(&[0.9, 0.4, 0.3], &[true, false, true]),
            markers: true,
        }];
        let c = Chart {
            title: "Edema",
            x_label: "FPR",
            y_label: "TPR",
            x: 0.0..1.0,
            y: 0.0..1.0,
            diagonal: true,
            series: &series,
        };
        let files = line_chart(&dir.path().join("roc_edema"), &c).unwrap();
        assert_eq!(files.len(), 2);
        let svg = std::fs::read_to_string(&files[0]).unwrap();
        assert!(
            svg.starts_with("<svg") && svg.contains("Edema"),
            "{}",
            &svg[..100.min(svg.len())]
        );
        let png = image::open(&files[1]).unwrap();
        assert_eq!((png.width(), png.height()), (800, 600));
    }
}
