//! Synthetic phase-contrast-like cell images with exact ground truth.
//!
//! The embedded default of the examples: it needs no download and writes the same layouts as the
//! real data sets, so the readers are exercised end to end.
//!
//! - [`generate`]: one image in memory, `(Image, Instances)`, for a cell type.
//! - [`samples`]: `n` in-memory [`Sample`]s cycling through the three types.
//! - [`generate_sartorius`] / [`generate_sartorius_layout`]: `train.csv` + `train/{id}.png` (+ `test/{id}.png`
//!   with `test_truth.csv`), the competition layout.
//! - [`generate_livecell`]: `annotations/LIVECell/livecell_coco_{train,val,test}.json` (polygons) +
//!   LZW TIFFs in `images/livecell_{train_val,test}_images/{CellLine}/`, the LIVECell layout.
//!
//! Cells are polygons rasterised with pycocotools' rule ([`cellseg_rle::CocoRle::from_polygons`]),
//! so the JSON polygons and the CSV RLEs decode to exactly the in-memory masks. Per type (counts and
//! sizes like the real 520×704 images): SH-SY5Y many (120–260) small bodies (radius 5–11 px) with a
//! neurite; astrocytes fewer (35–80) long thin curved cells (60–180 px long, 4–9 px wide);
//! cortical neurons few (20–45) round cells (radius 8–15 px). Intensities imitate phase contrast: a
//! mid-gray uneven background, darker cell bodies, a dark rim and a bright halo outside.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use cellseg_core::{BoxXyxy, CellType, CroppedMask, ImageSize, Instances, LivecellClass};
use cellseg_rle::CocoRle;
use rand::{Rng, RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::raster::{Image, write_atomically, write_png, write_tiff_lzw};
use crate::sample::Sample;
use crate::{Error, Result};

/// The Sartorius / LIVECell frame size, 520×704.
pub const FRAME: ImageSize = ImageSize::new(520, 704);

/// One synthetic cell: its polygon (`[x0, y0, x1, y1, …]`, 2-decimal floats) and rasterised mask.
#[derive(Debug, Clone, PartialEq)]
pub struct Cell {
    /// The outline.
    pub polygon: Vec<f64>,
    /// The mask (pycocotools rasterisation of `polygon`).
    pub mask: CroppedMask,
}

/// Generates one image of `cell_type` with its ground truth (label = `cell_type.label()`).
pub fn generate(cell_type: CellType, size: ImageSize, seed: u64) -> (Image, Instances) {
    let (image, cells) = generate_cells(cell_type, size, seed);
    (image, instances_of(cell_type.label(), size, &cells))
}

fn instances_of(label: usize, size: ImageSize, cells: &[Cell]) -> Instances {
    let mut inst = Instances::empty(size);
    for c in cells {
        inst.boxes.push(c.mask.bbox().unwrap_or_default());
        inst.labels.push(label);
        inst.masks.push(c.mask.clone());
    }
    inst
}

/// `n` in-memory samples of size `size`, cell types cycling shsy5y, astro, cort.
pub fn samples(n: usize, size: ImageSize, seed: u64) -> Vec<Sample> {
    (0..n)
        .into_par_iter()
        .map(|i| {
            let t = CellType::ALL[i % 3];
            let (image, instances) =
                generate(t, size, seed.wrapping_mul(1_000_003).wrapping_add(i as u64));
            Sample { id: format!("synthetic_{i:04}_{t}"), image, instances }
        })
        .collect()
}

/// Generates one image of `cell_type` and its cells (polygons and masks).
pub fn generate_cells(cell_type: CellType, size: ImageSize, seed: u64) -> (Image, Vec<Cell>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5EED_CE11);
    let scale = (size.pixels() as f64 / FRAME.pixels() as f64).max(0.02);
    let (lo, hi) = match cell_type {
        CellType::Shsy5y => (120.0, 260.0),
        CellType::Astro => (35.0, 80.0),
        CellType::Cort => (20.0, 45.0),
    };
    let target = ((rng.random_range(lo..hi) * scale).round() as usize).max(1);
    let mut cells: Vec<Cell> = Vec::with_capacity(target);
    let mut centres: Vec<(f64, f64, f64)> = Vec::with_capacity(target);
    let (w, h) = (size.width as f64, size.height as f64);
    let mut attempts = 0;
    while cells.len() < target && attempts < target * 20 {
        attempts += 1;
        let cx = rng.random_range(0.0..w);
        let cy = rng.random_range(0.0..h);
        let (poly, radius) = match cell_type {
            CellType::Shsy5y => shsy5y_polygon(cx, cy, &mut rng),
            CellType::Astro => astro_polygon(cx, cy, &mut rng),
            CellType::Cort => cort_polygon(cx, cy, &mut rng),
        };
        let min_d = match cell_type {
            CellType::Astro => 0.5,
            _ => 0.9,
        };
        if centres
            .iter()
            .any(|&(x, y, r)| ((x - cx).powi(2) + (y - cy).powi(2)).sqrt() < min_d * (r + radius))
        {
            continue;
        }
        let poly: Vec<f64> = poly
            .chunks_exact(2)
            .flat_map(|p| [round2(p[0].clamp(0.0, w)), round2(p[1].clamp(0.0, h))])
            .collect();
        let Ok(rle) = CocoRle::from_polygons(std::slice::from_ref(&poly), size.height, size.width)
        else {
            continue;
        };
        if rle.area() < 12 {
            continue;
        }
        centres.push((cx, cy, radius));
        cells.push(Cell { polygon: poly, mask: rle.to_cropped() });
    }
    let image = render(size, &cells, &mut rng);
    (image, cells)
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

fn ellipse_points<R: Rng + ?Sized>(
    cx: f64,
    cy: f64,
    a: f64,
    b: f64,
    n: usize,
    jitter: f64,
    rng: &mut R,
) -> Vec<(f64, f64)> {
    let rot = rng.random_range(0.0..std::f64::consts::PI);
    let (s, c) = rot.sin_cos();
    (0..n)
        .map(|i| {
            let t = i as f64 / n as f64 * std::f64::consts::TAU;
            let k = 1.0 + rng.random_range(-jitter..=jitter);
            let (x, y) = (a * k * t.cos(), b * k * t.sin());
            (cx + x * c - y * s, cy + x * s + y * c)
        })
        .collect()
}

fn flat(points: &[(f64, f64)]) -> Vec<f64> {
    points.iter().flat_map(|&(x, y)| [x, y]).collect()
}

fn shsy5y_polygon<R: Rng + ?Sized>(cx: f64, cy: f64, rng: &mut R) -> (Vec<f64>, f64) {
    let a = rng.random_range(5.0..11.0);
    let b = a * rng.random_range(0.6..1.0);
    let mut pts = ellipse_points(cx, cy, a, b, 14, 0.12, rng);
    // a neurite: a thin spike out of one vertex
    let i = rng.random_range(0..pts.len());
    let (px, py) = pts[i];
    let (dx, dy) = (px - cx, py - cy);
    let norm = (dx * dx + dy * dy).sqrt().max(1e-6);
    let len = rng.random_range(6.0..22.0);
    let tip = (px + dx / norm * len, py + dy / norm * len);
    let side = (-dy / norm * 1.2, dx / norm * 1.2);
    pts.splice(i..=i, [(px - side.0, py - side.1), tip, (px + side.0, py + side.1)]);
    (flat(&pts), a)
}

fn astro_polygon<R: Rng + ?Sized>(cx: f64, cy: f64, rng: &mut R) -> (Vec<f64>, f64) {
    let len = rng.random_range(60.0..180.0);
    let half_w = rng.random_range(2.0..4.5);
    let steps = 10;
    let mut angle: f64 = rng.random_range(0.0..std::f64::consts::TAU);
    let step = len / steps as f64;
    // centre line, starting half a length before the centre
    let mut line = vec![(cx - angle.cos() * len / 2.0, cy - angle.sin() * len / 2.0)];
    for _ in 0..steps {
        angle += rng.random_range(-0.35..0.35);
        let &(x, y) = line.last().expect("non-empty");
        line.push((x + angle.cos() * step, y + angle.sin() * step));
    }
    let mut left = Vec::with_capacity(line.len());
    let mut right = Vec::with_capacity(line.len());
    for i in 0..line.len() {
        let (a, b) = (line[i.saturating_sub(1)], line[(i + 1).min(line.len() - 1)]);
        let (dx, dy) = (b.0 - a.0, b.1 - a.1);
        let n = (dx * dx + dy * dy).sqrt().max(1e-6);
        // thicker in the middle (the soma), tapered at the ends
        let t = i as f64 / (line.len() - 1) as f64;
        let wdt = half_w * (0.5 + 1.2 * (std::f64::consts::PI * t).sin());
        let (nx, ny) = (-dy / n * wdt, dx / n * wdt);
        left.push((line[i].0 + nx, line[i].1 + ny));
        right.push((line[i].0 - nx, line[i].1 - ny));
    }
    right.reverse();
    left.extend(right);
    (flat(&left), len / 2.0)
}

fn cort_polygon<R: Rng + ?Sized>(cx: f64, cy: f64, rng: &mut R) -> (Vec<f64>, f64) {
    let r = rng.random_range(8.0..15.0);
    let b = r * rng.random_range(0.8..1.0);
    (flat(&ellipse_points(cx, cy, r, b, 18, 0.06, rng)), r)
}

fn render<R: Rng + ?Sized>(size: ImageSize, cells: &[Cell], rng: &mut R) -> Image {
    let (h, w) = (size.height, size.width);
    // Uneven illumination: a smooth gradient plus a low-frequency wave.
    let (gx, gy) = (rng.random_range(-12.0f32..12.0), rng.random_range(-12.0f32..12.0));
    let (fx, fy, ph) = (
        rng.random_range(1.0f32..3.0),
        rng.random_range(1.0f32..3.0),
        rng.random_range(0.0f32..std::f32::consts::TAU),
    );
    let mut v = vec![0f32; size.pixels()];
    for r in 0..h {
        let yr = r as f32 / h.max(1) as f32;
        for c in 0..w {
            let xr = c as f32 / w.max(1) as f32;
            v[r * w + c] = 128.0
                + gx * (xr - 0.5)
                + gy * (yr - 0.5)
                + 4.0 * (std::f32::consts::TAU * (fx * xr + fy * yr) + ph).sin();
        }
    }
    // label map of cells (for halos); later cells on top
    let mut label = vec![0u32; size.pixels()];
    for (k, cell) in cells.iter().enumerate() {
        let (t, l, mh, mw) = cell.mask.rect();
        let d = cell.mask.as_slice();
        let body = rng.random_range(-30.0f32..-12.0);
        for rr in 0..mh {
            for cc in 0..mw {
                if d[rr * mw + cc] != 0 {
                    let i = (t + rr) * w + l + cc;
                    label[i] = k as u32 + 1;
                    v[i] += body;
                }
            }
        }
    }
    // rim (inside, dark) and halo (outside, bright): pixels whose 4-neighbour differs
    let mut out = vec![0u8; size.pixels()];
    let mut noise = NormalPairs::default();
    for r in 0..h {
        for c in 0..w {
            let i = r * w + c;
            let me = label[i];
            let mut edge = false;
            let mut near_cell = false;
            for (dr, dc) in [(-1isize, 0isize), (1, 0), (0, -1), (0, 1)] {
                let (nr, nc) = (r as isize + dr, c as isize + dc);
                if nr < 0 || nc < 0 || nr >= h as isize || nc >= w as isize {
                    continue;
                }
                let other = label[nr as usize * w + nc as usize];
                if other != me {
                    edge = true;
                    near_cell |= other != 0;
                }
            }
            let mut x = v[i];
            if edge && me != 0 {
                x -= 18.0;
            } else if edge && near_cell {
                x += 35.0;
            }
            x += 4.0 * noise.next(rng);
            out[i] = x.round().clamp(0.0, 255.0) as u8;
        }
    }
    Image::new(size, 1, out).expect("gray frame")
}

#[derive(Default)]
struct NormalPairs {
    spare: Option<f32>,
}

impl NormalPairs {
    fn next<R: Rng + ?Sized>(&mut self, rng: &mut R) -> f32 {
        if let Some(s) = self.spare.take() {
            return s;
        }
        let u1: f32 = rng.random::<f32>().max(f32::MIN_POSITIVE);
        let u2: f32 = rng.random();
        let r = (-2.0 * u1.ln()).sqrt();
        let t = std::f32::consts::TAU * u2;
        self.spare = Some(r * t.sin());
        r * t.cos()
    }
}

/// `(index, cell type, file name, cells)` of one generated LIVECell image.
type GeneratedImage = (usize, CellType, String, Vec<Cell>);

/// What a generator wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct SyntheticSummary {
    /// The root folder.
    pub root: PathBuf,
    /// Annotated images written.
    pub images: usize,
    /// Instances written.
    pub instances: usize,
}

fn hex_id(rng: &mut ChaCha8Rng) -> String {
    let v: u64 = rng.random();
    format!("{:012x}", v & 0xFFFF_FFFF_FFFF)
}

fn create_dir(p: &Path) -> Result<()> {
    std::fs::create_dir_all(p).map_err(|e| Error::io(p, e))
}

/// What [`generate_sartorius_layout`] writes.
#[derive(Debug, Clone, PartialEq)]
pub struct SartoriusLayout {
    /// Annotated `train/` images (types cycling shsy5y, astro, cort).
    pub images: usize,
    /// Images in `test/`, whose truth goes to `test_truth.csv` (the Kaggle test set has none;
    /// this one lets a run score its submission).
    pub test_images: usize,
    /// Image size (the competition's: 520×704, [`FRAME`]).
    pub size: ImageSize,
    /// Seed of ids and cells.
    pub seed: u64,
    /// Real annotated images added to `train/` after the synthetic ones as a fourth plate,
    /// [`REAL_PLATE`], two images per well (so GroupKFold keeps a well's images in one fold):
    /// written gray ([`Image::to_gray`]) under their own ids, every instance labelled shsy5y
    /// (class 0, as `configs/demo.toml` labels DSB2018 nuclei). Any size; usually DSB2018 images
    /// of the layout's size ([`crate::dsb::DsbDataset`]).
    pub real: Vec<Sample>,
}

/// The plate of [`SartoriusLayout::real`]'s images in `sample_id` (`plate_well` groups
/// `dsb2018[nuclei]_A1`, `…_A2`, …).
pub const REAL_PLATE: &str = "dsb2018[nuclei]";

/// Writes the Sartorius competition layout into `dir`: `train.csv` (all 9 columns, one row per
/// instance, row-major RLE) and `train/{id}.png` for `n_images` 520×704 images (types cycling
/// shsy5y, astro, cort; `sample_id`s give about two images per plate well), plus three unlabeled
/// images in `test/` (their truth in `test_truth.csv`).
///
/// # Errors
/// [`Error::Io`] / [`Error::ImageEncode`] when a file cannot be written.
pub fn generate_sartorius(dir: &Path, n_images: usize, seed: u64) -> Result<SyntheticSummary> {
    generate_sartorius_layout(
        dir,
        &SartoriusLayout { images: n_images, test_images: 3, size: FRAME, seed, real: Vec::new() },
    )
}

/// The rows of one image in the `train.csv` layout: image `i` of the file, in well `well_index`
/// of `plate`.
fn sartorius_rows<'a>(
    id: &str,
    (plate, well_index): (&str, usize),
    i: usize,
    t: CellType,
    size: ImageSize,
    masks: impl Iterator<Item = &'a CroppedMask>,
) -> String {
    let well = format!("{}{}", (b'A' + (well_index / 12 % 8) as u8) as char, well_index % 12 + 1);
    let hours = 8 + (i % 4) * 4;
    let sample_id =
        format!("{plate}_{well}-{}_Vessel-{}_Ph_{}", i % 4 + 1, 700 + i % 50, i % 3 + 1);
    let mut s = String::new();
    for m in masks {
        let rle = cellseg_rle::kaggle::encode_cropped(m);
        let _ = writeln!(
            s,
            "{id},{rle},{},{},{t},{hours:02}h00m00s,2020-01-{:02},{sample_id},0 days {hours:02}:00:00",
            size.width,
            size.height,
            i % 28 + 1
        );
    }
    s
}

/// The plate of a synthetic image of type `t`.
fn synthetic_plate(t: CellType) -> &'static str {
    match t {
        CellType::Shsy5y => "shsy5y[diff]",
        CellType::Astro => "astros[hippo]",
        CellType::Cort => "cort[pre-treat]",
    }
}

/// Writes the Sartorius competition layout of `layout` into `dir`: `train.csv` + `train/{id}.png`,
/// `test/{id}.png` + `test_truth.csv` (both CSVs with all 9 columns; `sample_id`s give about two
/// images per plate well, so GroupKFold has real groups), then [`SartoriusLayout::real`] in
/// `train/`.
///
/// # Errors
/// [`Error::Io`] / [`Error::ImageEncode`] when a file cannot be written;
/// [`Error::DuplicateImage`] (before anything is written) when two images would share an id.
pub fn generate_sartorius_layout(dir: &Path, layout: &SartoriusLayout) -> Result<SyntheticSummary> {
    let SartoriusLayout { images: n_images, test_images, size, seed, ref real } = *layout;
    let train = dir.join("train");
    let test = dir.join("test");
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let ids: Vec<String> = (0..n_images + test_images).map(|_| hex_id(&mut rng)).collect();
    let mut seen = std::collections::HashSet::new();
    if let Some(id) = ids.iter().chain(real.iter().map(|r| &r.id)).find(|id| !seen.insert(*id)) {
        return Err(Error::DuplicateImage { dir: dir.to_path_buf(), id: id.clone() });
    }
    create_dir(&train)?;
    create_dir(&test)?;
    let well_of = |i: usize| if n_images >= 10 { i / 6 } else { i / 3 };
    let header =
        "id,annotation,width,height,cell_type,plate_time,sample_date,sample_id,elapsed_timedelta\n";
    let rows: Vec<Result<String>> = (0..n_images + test_images)
        .into_par_iter()
        .map(|i| {
            let (t, image_seed, folder, k) = if i < n_images {
                (CellType::ALL[i % 3], seed.wrapping_add(1 + i as u64), &train, i)
            } else {
                let k = i - n_images;
                (CellType::ALL[k % 3], seed.wrapping_add(10_000 + k as u64), &test, n_images + k)
            };
            let (image, cells) = generate_cells(t, size, image_seed);
            write_png(&image, &folder.join(format!("{}.png", ids[i])))?;
            let masks = cells.iter().map(|c| &c.mask);
            Ok(sartorius_rows(&ids[i], (synthetic_plate(t), well_of(k)), k, t, size, masks))
        })
        .collect();
    let real_rows: Vec<Result<String>> = real
        .par_iter()
        .enumerate()
        .map(|(j, r)| {
            write_png(&r.image.to_gray(), &train.join(format!("{}.png", r.id)))?;
            let (t, masks) = (CellType::Shsy5y, r.instances.masks.iter());
            Ok(sartorius_rows(&r.id, (REAL_PLATE, j / 2), j, t, r.image.size(), masks))
        })
        .collect();
    let (mut train_csv, mut test_csv) = (String::from(header), String::from(header));
    let mut instances = 0;
    for (i, r) in rows.into_iter().chain(real_rows).enumerate() {
        let r = r?;
        if i < n_images || i >= n_images + test_images {
            instances += r.lines().count();
            train_csv.push_str(&r);
        } else {
            test_csv.push_str(&r);
        }
    }
    write_atomically(&dir.join("train.csv"), train_csv.as_bytes())?;
    write_atomically(&dir.join("test_truth.csv"), test_csv.as_bytes())?;
    Ok(SyntheticSummary { root: dir.to_path_buf(), images: n_images + real.len(), instances })
}

/// The LIVECell cell line a synthetic type is written as: shsy5y → SHSY5Y, astro → A172,
/// cort → Huh7.
pub fn livecell_class(cell_type: CellType) -> LivecellClass {
    match cell_type {
        CellType::Shsy5y => LivecellClass::Shsy5y,
        CellType::Astro => LivecellClass::A172,
        CellType::Cort => LivecellClass::Huh7,
    }
}

/// Writes the LIVECell layout into `dir`: `annotations/LIVECell/livecell_coco_{train,val,test}.json`
/// (COCO polygons, one category `cell`; the train file uses LIVECell's dict-shaped `annotations`)
/// and LZW-compressed 8-bit TIFFs in `images/livecell_train_val_images/{CellLine}/` and
/// `images/livecell_test_images/{CellLine}/`. About 70 / 15 / 15 % of the `n_images` go to train /
/// val / test.
///
/// # Errors
/// [`Error::Io`] / [`Error::ImageEncode`] when a file cannot be written.
pub fn generate_livecell(dir: &Path, n_images: usize, seed: u64) -> Result<SyntheticSummary> {
    let ann_dir = dir.join("annotations").join("LIVECell");
    create_dir(&ann_dir)?;
    let n_test = if n_images >= 3 { (n_images * 15 / 100).max(1) } else { 0 };
    let n_val = n_test;
    let n_train = n_images - n_test - n_val;
    let splits = [
        ("train", 0..n_train),
        ("val", n_train..n_train + n_val),
        ("test", n_train + n_val..n_images),
    ];
    let generated: Vec<Result<GeneratedImage>> = (0..n_images)
        .into_par_iter()
        .map(|i| {
            let t = CellType::ALL[i % 3];
            let class = livecell_class(t);
            let (image, cells) = generate_cells(t, FRAME, seed.wrapping_add(1 + i as u64));
            let folder = if i >= n_train + n_val {
                "livecell_test_images"
            } else {
                "livecell_train_val_images"
            };
            let img_dir = dir.join("images").join(folder).join(class.folder());
            create_dir(&img_dir)?;
            let name = format!(
                "{}_Phase_{}{}_{}_{:02}d{:02}h00m_{}.tif",
                class.folder(),
                (b'A' + (i % 8) as u8) as char,
                i % 12 + 1,
                i % 2 + 1,
                i % 4,
                (i * 4) % 24,
                i % 4 + 1
            );
            write_tiff_lzw(&image, &img_dir.join(&name))?;
            Ok((i, t, name, cells))
        })
        .collect();
    let generated: Vec<_> = generated.into_iter().collect::<Result<_>>()?;
    let mut instances = 0;
    let mut ann_id = 1u64;
    for (split, range) in splits {
        let mut images = Vec::new();
        let mut anns = Vec::new();
        for (i, _t, name, cells) in &generated[range] {
            let image_id = 1000 + *i as u64;
            images.push(serde_json::json!({
                "id": image_id, "width": FRAME.width, "height": FRAME.height,
                "file_name": name, "original_filename": name.replace(".tif", ".png"),
            }));
            for c in cells {
                let (xs, ys): (Vec<f64>, Vec<f64>) =
                    c.polygon.chunks_exact(2).map(|p| (p[0], p[1])).unzip();
                let min = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
                let max = |v: &[f64]| v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let bbox =
                    [min(&xs), min(&ys), round2(max(&xs) - min(&xs)), round2(max(&ys) - min(&ys))];
                anns.push((
                    ann_id,
                    serde_json::json!({
                        "id": ann_id, "image_id": image_id, "category_id": 1,
                        "segmentation": [c.polygon], "area": c.mask.area() as f64,
                        "bbox": bbox, "iscrowd": 0,
                    }),
                ));
                ann_id += 1;
                instances += 1;
            }
        }
        let annotations = if split == "train" {
            serde_json::Value::Object(anns.into_iter().map(|(id, a)| (id.to_string(), a)).collect())
        } else {
            serde_json::Value::Array(anns.into_iter().map(|(_, a)| a).collect())
        };
        let doc = serde_json::json!({
            "info": {"description": "cellseg synthetic LIVECell-layout data", "year": "2026"},
            "licenses": [],
            "categories": [{"supercategory": "cell", "id": 1, "name": "cell"}],
            "images": images,
            "annotations": annotations,
        });
        let path = ann_dir.join(format!("livecell_coco_{split}.json"));
        let text = serde_json::to_string(&doc)
            .map_err(|e| Error::Json { path: path.clone(), message: e.to_string() })?;
        write_atomically(&path, text.as_bytes())?;
    }
    Ok(SyntheticSummary { root: dir.to_path_buf(), images: n_images, instances })
}

/// Tight boxes of `masks` (empty masks get `(0,0,0,0)` as pycocotools `toBbox` does).
pub fn boxes_of(masks: &[CroppedMask]) -> Vec<BoxXyxy> {
    masks.iter().map(|m| m.bbox().unwrap_or_default()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_sizes_follow_the_cell_types() {
        let mut stats = Vec::new();
        for t in CellType::ALL {
            let (img, inst) = generate(t, FRAME, 7);
            assert_eq!(img.size(), FRAME);
            assert!(inst.labels.iter().all(|&l| l == t.label()));
            let mean_area =
                inst.masks.iter().map(|m| m.area()).sum::<usize>() as f64 / inst.len() as f64;
            let elong = inst
                .boxes
                .iter()
                .map(|b| (b.width().max(b.height()) / b.width().min(b.height()).max(1.0)) as f64)
                .sum::<f64>()
                / inst.len() as f64;
            stats.push((inst.len(), mean_area, elong));
        }
        let [(n_s, a_s, _), (n_a, _, e_a), (n_c, a_c, e_c)] = [stats[0], stats[1], stats[2]];
        assert!(n_s > n_a && n_a > n_c, "counts {n_s} {n_a} {n_c}");
        assert!(a_s < a_c, "shsy5y smaller than cort: {a_s} {a_c}");
        assert!(e_a > e_c, "astro longer than cort: {e_a} {e_c}");
    }

    #[test]
    fn generation_is_deterministic() {
        assert_eq!(
            generate(CellType::Cort, ImageSize::new(128, 160), 3),
            generate(CellType::Cort, ImageSize::new(128, 160), 3)
        );
        assert_ne!(
            generate(CellType::Cort, ImageSize::new(128, 160), 3).0,
            generate(CellType::Cort, ImageSize::new(128, 160), 4).0
        );
    }
}
