//! Line charts stacked in panels that share the x axis: a run's training curves (loss, the
//! validation metric, the learning rate), or several runs overlaid.

use std::ops::Range;

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::{draw_err, font, png, Format, PlotError, Result, FONT};

/// Width of a figure, and the height of a panel of weight 1, in pixels.
const WIDTH: u32 = 900;
const PANEL_HEIGHT: u32 = 300;
const TITLE_HEIGHT: u32 = 40;

/// Colour-blind-safe series colours (Okabe–Ito), in the order runs and series take them.
const PALETTE: [RGBColor; 7] = [
    RGBColor(0, 114, 178),
    RGBColor(213, 94, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(230, 159, 0),
    RGBColor(86, 180, 233),
    RGBColor(100, 100, 100),
];

/// One line: `(x, y)` points in order of x.
#[derive(Clone, Debug, Default)]
pub struct Series {
    pub label: String,
    pub points: Vec<(f64, f64)>,
    /// Index into the palette (wraps).
    pub color: usize,
    /// A dot at every point (validations, which are few and each one matters).
    pub markers: bool,
    /// A thin, lighter line (frequent, noisy records such as the training loss).
    pub thin: bool,
}

/// One chart of the figure.
#[derive(Clone, Debug, Default)]
pub struct Panel {
    pub title: String,
    pub y_label: String,
    pub series: Vec<Series>,
    /// Relative height (1.0 = 300 px).
    pub height: f64,
    /// A logarithmic y axis (losses that fall over orders of magnitude); non-positive values
    /// are left out.
    pub log_y: bool,
}

/// Panels stacked top to bottom over one x axis.
#[derive(Clone, Debug, Default)]
pub struct Figure {
    pub title: String,
    pub x_label: String,
    pub panels: Vec<Panel>,
}

/// Draws `figure` as PNG or SVG bytes. Panels without points are left out; a figure with none
/// is an error.
pub fn curves(figure: &Figure, format: Format) -> Result<Vec<u8>> {
    let panels: Vec<&Panel> = figure
        .panels
        .iter()
        .filter(|p| p.series.iter().any(|s| !s.points.is_empty()))
        .collect();
    if panels.is_empty() {
        return Err(PlotError::Empty(format!(
            "{}: no recorded points",
            figure.title
        )));
    }
    let heights: Vec<u32> = panels
        .iter()
        .map(|p| (p.height.clamp(0.3, 3.0) * PANEL_HEIGHT as f64) as u32)
        .collect();
    let size = (WIDTH, TITLE_HEIGHT + heights.iter().sum::<u32>());
    font();
    match format {
        Format::Svg => {
            let mut svg = String::new();
            draw(
                SVGBackend::with_string(&mut svg, size).into_drawing_area(),
                figure,
                &panels,
                &heights,
            )?;
            Ok(svg.into_bytes())
        }
        Format::Png => {
            let mut rgb = vec![255u8; (size.0 * size.1 * 3) as usize];
            draw(
                BitMapBackend::with_buffer(&mut rgb, size).into_drawing_area(),
                figure,
                &panels,
                &heights,
            )?;
            png(rgb, size.0, size.1)
        }
    }
}

fn draw<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    figure: &Figure,
    panels: &[&Panel],
    heights: &[u32],
) -> Result<()> {
    root.fill(&WHITE).map_err(draw_err)?;
    let (title, mut rest) = root.split_vertically(TITLE_HEIGHT);
    title
        .titled(&figure.title, (FONT, 22).into_font().style(FontStyle::Bold))
        .map_err(draw_err)?;
    let x = x_range(panels);
    for (panel, &h) in panels.iter().zip(heights) {
        let (area, below) = rest.split_vertically(h);
        draw_panel(&area, panel, x.clone(), &figure.x_label)?;
        rest = below;
    }
    root.present().map_err(draw_err)
}

fn draw_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    panel: &Panel,
    x: Range<f64>,
    x_label: &str,
) -> Result<()> {
    let series: Vec<Series> = panel
        .series
        .iter()
        .map(|s| Series {
            points: if panel.log_y {
                s.points
                    .iter()
                    .filter(|p| p.1 > 0.0)
                    .map(|&(x, y)| (x, y.log10()))
                    .collect()
            } else {
                s.points.clone()
            },
            ..s.clone()
        })
        .collect();
    let y = y_range(&series);
    let log_y = panel.log_y;
    let y_format = move |v: &f64| compact(if log_y { 10f64.powf(*v) } else { *v });
    let mut chart = ChartBuilder::on(area)
        .caption(&panel.title, (FONT, 16))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(x, y)
        .map_err(draw_err)?;
    chart
        .configure_mesh()
        .x_desc(x_label)
        .y_desc(&panel.y_label)
        .label_style((FONT, 13))
        .axis_desc_style((FONT, 14))
        .light_line_style(WHITE)
        .bold_line_style(RGBColor(225, 225, 225))
        .y_labels(6)
        .x_label_formatter(&|v| compact(*v))
        .y_label_formatter(&y_format)
        .draw()
        .map_err(draw_err)?;
    for s in &series {
        let color = PALETTE[s.color % PALETTE.len()];
        let style = if s.thin {
            color.mix(0.55).stroke_width(1)
        } else {
            color.stroke_width(2)
        };
        chart
            .draw_series(LineSeries::new(s.points.iter().copied(), style))
            .map_err(draw_err)?
            .label(s.label.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 22, y)], style));
        if s.markers {
            chart
                .draw_series(s.points.iter().map(|&p| Circle::new(p, 3, color.filled())))
                .map_err(draw_err)?;
        }
    }
    if series.len() < 2 {
        return Ok(()); // the panel's title names its one line
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(RGBColor(180, 180, 180))
        .label_font((FONT, 13))
        .draw()
        .map_err(draw_err)
}

/// The steps every panel spans.
fn x_range(panels: &[&Panel]) -> Range<f64> {
    let xs = panels
        .iter()
        .flat_map(|p| &p.series)
        .flat_map(|s| &s.points)
        .map(|p| p.0);
    let (lo, hi) = bounds(xs);
    let lo = lo.min(0.0);
    lo..if hi > lo { hi } else { lo + 1.0 }
}

/// The values with a margin of 5 % on each side (10 % of the value for a constant line).
fn y_range(series: &[Series]) -> Range<f64> {
    let (lo, hi) = bounds(series.iter().flat_map(|s| &s.points).map(|p| p.1));
    let pad = if hi > lo {
        (hi - lo) * 0.05
    } else if lo != 0.0 {
        lo.abs() * 0.1
    } else {
        1.0
    };
    let lo = if lo >= 0.0 {
        (lo - pad).max(0.0)
    } else {
        lo - pad
    };
    lo..hi + pad
}

fn bounds(values: impl Iterator<Item = f64>) -> (f64, f64) {
    values
        .filter(|v| v.is_finite())
        .fold(None, |acc: Option<(f64, f64)>, v| {
            Some(acc.map_or((v, v), |(lo, hi)| (lo.min(v), hi.max(v))))
        })
        .unwrap_or((0.0, 1.0))
}

/// Axis labels without float noise: 12000 → "12k", 0.0003 → "3e-4", 2.5 → "2.5".
fn compact(v: f64) -> String {
    let a = v.abs();
    if a == 0.0 {
        "0".into()
    } else if a >= 10_000.0 {
        format!("{}k", trim(v / 1000.0, 1))
    } else if a < 0.01 {
        let e = a.log10().floor() as i32;
        format!("{}e{e}", trim(v / 10f64.powi(e), 1))
    } else {
        trim(v, if a >= 100.0 { 0 } else { 3 })
    }
}

fn trim(v: f64, decimals: usize) -> String {
    let s = format!("{v:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figure(k: usize) -> Figure {
        let valid: Vec<(f64, f64)> = (1..=k)
            .map(|i| (i as f64 * 100.0, 3.0 / i as f64))
            .collect();
        Figure {
            title: "run".into(),
            x_label: "step".into(),
            panels: vec![Panel {
                title: "loss".into(),
                y_label: "nats/token".into(),
                series: vec![
                    Series {
                        label: "train".into(),
                        points: (1..=10 * k)
                            .map(|i| (i as f64 * 10.0, 4.0 / i as f64))
                            .collect(),
                        thin: true,
                        ..Series::default()
                    },
                    Series {
                        label: "valid".into(),
                        points: valid,
                        color: 1,
                        markers: true,
                        ..Series::default()
                    },
                ],
                height: 1.0,
                log_y: false,
            }],
        }
    }

    #[test]
    fn svg_has_one_marker_per_point_and_png_decodes_at_its_size() {
        let svg = String::from_utf8(curves(&figure(7), Format::Svg).unwrap()).unwrap();
        assert_eq!(svg.matches("<circle").count(), 7, "{svg}");
        assert!(svg.contains("nats/token") && svg.contains("\nvalid\n"));
        let png = curves(&figure(7), Format::Png).unwrap();
        let img = image::load_from_memory(&png).unwrap();
        assert_eq!(
            (img.width(), img.height()),
            (WIDTH, TITLE_HEIGHT + PANEL_HEIGHT)
        );
        // The validation line was drawn in its own colour (not only background and text).
        let c = PALETTE[1];
        let rgb = img.to_rgb8();
        assert!(rgb.pixels().filter(|p| p.0 == [c.0, c.1, c.2]).count() > 100);
    }

    #[test]
    fn a_figure_without_points_is_an_error() {
        let mut f = figure(1);
        f.panels[0].series.clear();
        assert!(matches!(curves(&f, Format::Png), Err(PlotError::Empty(_))));
    }

    #[test]
    fn axis_labels_are_compact() {
        assert_eq!(compact(12000.0), "12k");
        assert_eq!(compact(0.0003), "3e-4");
        assert_eq!(compact(2.5), "2.5");
        assert_eq!(compact(250.0), "250");
    }
}
