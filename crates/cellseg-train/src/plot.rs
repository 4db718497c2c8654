//! The PNG of the training curves (`curves.png`): the loss per step on the left, the validation
//! score (overall and per cell type) on the right.
//!
//! Drawn with plotters' bitmap backend into memory and written atomically. Text uses a built-in
//! 3×5 pixel font (upper case, digits, a few signs), so no system font is needed.

use std::path::Path;

use plotters::prelude::*;

use crate::checkpoint::write_atomic;
use crate::metrics_log::Record;
use crate::{Error, Result};

const WIDTH: u32 = 1200;
const HEIGHT: u32 = 450;
const SCALE: i32 = 3;

/// 3×5 glyphs, rows top to bottom, `#` = ink.
fn glyph(c: char) -> Option<[&'static str; 5]> {
    Some(match c.to_ascii_uppercase() {
        '0' => ["###", "#.#", "#.#", "#.#", "###"],
        '1' => [".#.", "##.", ".#.", ".#.", "###"],
        '2' => ["###", "..#", "###", "#..", "###"],
        '3' => ["###", "..#", "###", "..#", "###"],
        '4' => ["#.#", "#.#", "###", "..#", "..#"],
        '5' => ["###", "#..", "###", "..#", "###"],
        '6' => ["###", "#..", "###", "#.#", "###"],
        '7' => ["###", "..#", "..#", "..#", "..#"],
        '8' => ["###", "#.#", "###", "#.#", "###"],
        '9' => ["###", "#.#", "###", "..#", "###"],
        'A' => [".#.", "#.#", "###", "#.#", "#.#"],
        'B' => ["##.", "#.#", "##.", "#.#", "##."],
        'C' => [".##", "#..", "#..", "#..", ".##"],
        'D' => ["##.", "#.#", "#.#", "#.#", "##."],
        'E' => ["###", "#..", "##.", "#..", "###"],
        'F' => ["###", "#..", "##.", "#..", "#.."],
        'G' => [".##", "#..", "#.#", "#.#", ".##"],
        'H' => ["#.#", "#.#", "###", "#.#", "#.#"],
        'I' => ["###", ".#.", ".#.", ".#.", "###"],
        'J' => ["..#", "..#", "..#", "#.#", ".#."],
        'K' => ["#.#", "#.#", "##.", "#.#", "#.#"],
        'L' => ["#..", "#..", "#..", "#..", "###"],
        'M' => ["#.#", "###", "###", "#.#", "#.#"],
        'N' => ["##.", "#.#", "#.#", "#.#", "#.#"],
        'O' => [".#.", "#.#", "#.#", "#.#", ".#."],
        'P' => ["##.", "#.#", "##.", "#..", "#.."],
        'Q' => [".#.", "#.#", "#.#", "##.", ".##"],
        'R' => ["##.", "#.#", "##.", "#.#", "#.#"],
        'S' => [".##", "#..", ".#.", "..#", "##."],
        'T' => ["###", ".#.", ".#.", ".#.", ".#."],
        'U' => ["#.#", "#.#", "#.#", "#.#", "###"],
        'V' => ["#.#", "#.#", "#.#", "#.#", ".#."],
        'W' => ["#.#", "#.#", "###", "###", "#.#"],
        'X' => ["#.#", "#.#", ".#.", "#.#", "#.#"],
        'Y' => ["#.#", "#.#", ".#.", ".#.", ".#."],
        'Z' => ["###", "..#", ".#.", "#..", "###"],
        '.' => ["...", "...", "...", "...", ".#."],
        ',' => ["...", "...", "...", ".#.", "#.."],
        '-' => ["...", "...", "###", "...", "..."],
        '+' => ["...", ".#.", "###", ".#.", "..."],
        ':' => ["...", ".#.", "...", ".#.", "..."],
        '/' => ["..#", "..#", ".#.", "#..", "#.."],
        '_' => ["...", "...", "...", "...", "###"],
        '=' => ["...", "###", "...", "###", "..."],
        '(' => ["..#", ".#.", ".#.", ".#.", "..#"],
        ')' => ["#..", ".#.", ".#.", ".#.", "#.."],
        ' ' => ["...", "...", "...", "...", "..."],
        _ => return None,
    })
}

/// Width in pixels of `text` drawn by [`draw_text`].
fn text_width(text: &str) -> i32 {
    text.chars().count() as i32 * 4 * SCALE
}

/// Draws `text` with its top-left corner at `(x, y)`.
fn draw_text<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    text: &str,
    (x, y): (i32, i32),
    color: &RGBColor,
) -> std::result::Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    for (i, c) in text.chars().enumerate() {
        let Some(rows) = glyph(c).or_else(|| glyph('_')) else { continue };
        let x0 = x + i as i32 * 4 * SCALE;
        for (r, row) in rows.iter().enumerate() {
            for (col, ch) in row.chars().enumerate() {
                if ch == '#' {
                    let px = x0 + col as i32 * SCALE;
                    let py = y + r as i32 * SCALE;
                    area.draw(&Rectangle::new(
                        [(px, py), (px + SCALE - 1, py + SCALE - 1)],
                        color.filled(),
                    ))?;
                }
            }
        }
    }
    Ok(())
}

/// A short label for an axis value.
fn fmt_value(v: f64) -> String {
    let a = v.abs();
    if a != 0.0 && !(1e-3..1e4).contains(&a) { format!("{v:.2e}") } else { format!("{v:.4}") }
}

const PALETTE: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

struct Series {
    name: String,
    color: RGBColor,
    points: Vec<(f64, f64)>,
    width: u32,
}

/// Draws one panel: a frame, the series, min/max labels and a legend.
fn panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    title: &str,
    series: &[Series],
) -> std::result::Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let (w, h) = area.dim_in_pixel();
    let (w, h) = (w as i32, h as i32);
    let (left, right, top, bottom) = (110, 20, 44, 44);
    draw_text(area, title, (left, 14), &BLACK)?;
    let frame = [(left, top), (w - right, h - bottom)];
    area.draw(&Rectangle::new(frame, BLACK.stroke_width(1)))?;
    let all: Vec<(f64, f64)> =
        series.iter().flat_map(|s| s.points.iter().copied()).filter(|p| p.1.is_finite()).collect();
    if all.is_empty() {
        draw_text(area, "NO DATA YET", (left + 20, top + 20), &BLACK)?;
        return Ok(());
    }
    let (mut x0, mut x1) = (f64::MAX, f64::MIN);
    let (mut y0, mut y1) = (f64::MAX, f64::MIN);
    for &(x, y) in &all {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if x1 <= x0 {
        x1 = x0 + 1.0;
    }
    if y1 <= y0 {
        y1 = y0 + 1e-6_f64.max(y0.abs() * 1e-3);
    }
    let pw = f64::from(w - right - left);
    let ph = f64::from(h - bottom - top);
    let to_px = |(x, y): (f64, f64)| -> (i32, i32) {
        let px = f64::from(left) + (x - x0) / (x1 - x0) * pw;
        let py = f64::from(top) + (1.0 - (y - y0) / (y1 - y0)) * ph;
        (px.round() as i32, py.round() as i32)
    };
    let grey = RGBColor(220, 220, 220);
    for k in 1..4 {
        let y = top + (h - top - bottom) * k / 4;
        area.draw(&PathElement::new(vec![(left + 1, y), (w - right - 1, y)], grey))?;
    }
    for s in series {
        let pts: Vec<(i32, i32)> =
            s.points.iter().copied().filter(|p| p.1.is_finite()).map(to_px).collect();
        if pts.len() == 1 {
            area.draw(&Circle::new(pts[0], 3, s.color.filled()))?;
        } else {
            area.draw(&PathElement::new(pts.clone(), s.color.stroke_width(s.width)))?;
            if pts.len() <= 40 {
                for p in pts {
                    area.draw(&Circle::new(p, 2, s.color.filled()))?;
                }
            }
        }
    }
    let ymax = fmt_value(y1);
    let ymin = fmt_value(y0);
    draw_text(area, &ymax, (left - 6 - text_width(&ymax), top), &BLACK)?;
    draw_text(area, &ymin, (left - 6 - text_width(&ymin), h - bottom - 5 * SCALE), &BLACK)?;
    let xmin = format!("STEP {}", x0 as i64);
    let xmax = format!("{}", x1 as i64);
    draw_text(area, &xmin, (left, h - bottom + 8), &BLACK)?;
    draw_text(area, &xmax, (w - right - text_width(&xmax), h - bottom + 8), &BLACK)?;
    let mut lx = left + 10;
    for s in series {
        area.draw(&Rectangle::new(
            [(lx, top + 8), (lx + 14, top + 8 + 5 * SCALE)],
            s.color.filled(),
        ))?;
        draw_text(area, &s.name, (lx + 20, top + 8), &BLACK)?;
        lx += 20 + text_width(&s.name) + 16;
    }
    Ok(())
}

fn moving_average(points: &[(f64, f64)], window: usize) -> Vec<(f64, f64)> {
    let mut out = Vec::with_capacity(points.len());
    let mut sum = 0.0;
    let mut finite: std::collections::VecDeque<f64> = Default::default();
    for &(x, y) in points {
        if !y.is_finite() {
            continue;
        }
        finite.push_back(y);
        sum += y;
        if finite.len() > window {
            sum -= finite.pop_front().unwrap_or(0.0);
        }
        out.push((x, sum / finite.len() as f64));
    }
    out
}

/// Draws the curves of `records` into the PNG `path` (written atomically).
///
/// # Errors
/// [`Error::Plot`] when drawing or encoding fails, [`Error::Io`] when writing fails.
pub fn write_curves(records: &[Record], path: &Path) -> Result<()> {
    let mut loss = Vec::new();
    let mut scores: Vec<(f64, f64)> = Vec::new();
    let mut per_type: std::collections::BTreeMap<String, Vec<(f64, f64)>> = Default::default();
    for r in records {
        match r {
            Record::Step(s) => loss.push((s.step as f64, s.loss)),
            Record::Eval(e) => {
                scores.push((e.step as f64, e.report.score));
                for (t, v) in &e.report.per_type {
                    per_type.entry(t.clone()).or_default().push((e.step as f64, *v));
                }
            }
            Record::NonFinite(_) => {}
        }
    }
    let window = (loss.len() / 50).clamp(1, 200);
    let loss_series = vec![
        Series {
            name: "LOSS".into(),
            color: RGBColor(170, 200, 230),
            points: loss.clone(),
            width: 1,
        },
        Series {
            name: format!("MEAN OF {window}"),
            color: PALETTE[0],
            points: moving_average(&loss, window),
            width: 2,
        },
    ];
    let mut eval_series =
        vec![Series { name: "OVERALL".into(), color: BLACK, points: scores, width: 2 }];
    for (i, (name, points)) in per_type.into_iter().enumerate() {
        eval_series.push(Series {
            name,
            color: PALETTE[(i + 1) % PALETTE.len()],
            points,
            width: 1,
        });
    }
    let plot_err = |e: String| Error::Plot { path: path.to_path_buf(), message: e };
    let mut buf = vec![0u8; (WIDTH * HEIGHT * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| plot_err(e.to_string()))?;
        let (l, r) = root.split_horizontally(WIDTH / 2);
        panel(&l, "TRAINING LOSS", &loss_series).map_err(|e| plot_err(e.to_string()))?;
        panel(&r, "VALIDATION SCORE", &eval_series).map_err(|e| plot_err(e.to_string()))?;
        root.present().map_err(|e| plot_err(e.to_string()))?;
    }
    let mut png_bytes = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut png_bytes, WIDTH, HEIGHT);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut w = enc.write_header().map_err(|e| plot_err(e.to_string()))?;
        w.write_image_data(&buf).map_err(|e| plot_err(e.to_string()))?;
    }
    write_atomic(path, &png_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observer::{EvalRecord, EvalReport, StepStats};

    #[test]
    fn every_glyph_is_three_by_five() {
        for c in "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ.,-+:/_=() ".chars() {
            let g = glyph(c).unwrap();
            assert!(g.iter().all(|r| r.len() == 3), "{c}");
        }
    }

    #[test]
    fn writes_a_png_with_loss_and_validation_curves() {
        let mut records = Vec::new();
        for step in 1..=30u64 {
            records.push(Record::Step(StepStats {
                step,
                total_steps: 30,
                epoch: 1,
                epochs: 3,
                lr: 1e-3,
                loss: 2.0 / step as f64,
                losses: Default::default(),
                grad_norm: 1.0,
                images_per_s: 1.0,
                elapsed_s: 1.0,
            }));
            if step % 10 == 0 {
                let mut report = EvalReport { score: step as f64 / 40.0, ..Default::default() };
                report.per_type.insert("astro".into(), 0.1);
                report.per_type.insert("cort".into(), step as f64 / 50.0);
                records.push(Record::Eval(EvalRecord { step, epoch: 1, report, is_best: true }));
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("curves.png");
        write_curves(&records, &path).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(&bytes[1..4], b"PNG");
        let decoder = png::Decoder::new(std::io::Cursor::new(bytes));
        let mut reader = decoder.read_info().unwrap();
        let mut img = vec![0; reader.output_buffer_size().unwrap()];
        reader.next_frame(&mut img).unwrap();
        // Some ink of the overall-score colour (black) and of the loss colour.
        let px: Vec<[u8; 3]> = img.chunks(3).map(|c| [c[0], c[1], c[2]]).collect();
        assert!(px.contains(&[0, 0, 0]));
        assert!(px.contains(&[31, 119, 180]));
        write_curves(&[], &path).unwrap();
    }
}
