//! Out-of-fold (OOF) predictions on disk: per image, the detections **before** post-processing
//! (box, score, label and the soft mask cropped to its rectangle, i.e. [`SoftDetections`]), keyed
//! by image id. `infer_ensemble --oof` writes them; `tweak_thresholds` reads them.
//!
//! # Format, version 1
//! Little-endian, no padding, one file:
//!
//! | part | layout |
//! |---|---|
//! | header (16 bytes) | magic `b"CSEG-OOF"`, `version: u32` = 1, `flags: u32` = 0 |
//! | image record, repeated | `b'I'`, `id_len: u32`, `id` (UTF-8, 1..=4096 bytes), `height: u32`, `width: u32`, `count: u32`, `count` detections, `checksum: u64` |
//! | detection (40 bytes + mask) | `x1, y1, x2, y2, score: f32`, `label: u32`, `top, left, mask_height, mask_width: u32`, then `mask_height · mask_width` bytes `floor(prob · 255)`, row-major |
//! | end record | `b'E'`, `images: u64` (number of image records), `checksum: u64` |
//!
//! `checksum` is the 64-bit FNV-1a hash of the record's bytes from its tag up to the checksum. The
//! mask rectangle lies inside the image (pixels outside it are 0); ids are unique; scores are not
//! NaN. Nothing may follow the end record. A file without its end record is truncated; the
//! checksums catch bytes changed in place.
//!
//! Files are written to `<path>.tmp-<pid>` and renamed into place by [`OofWriter::finish`], so a
//! failed or interrupted write never leaves a partial file under the final name. Reading checks
//! everything above and reports the file, the image (position and id), the detection and the byte
//! offset of the first problem ([`Error::Oof`]).
//!
//! ```
//! use cellseg_core::{BoxXyxy, ImageSize};
//! use cellseg_postproc::{SoftDetections, SoftMask, oof};
//!
//! let size = ImageSize::new(8, 8);
//! let image = SoftDetections {
//!     image_size: size,
//!     boxes: vec![BoxXyxy::new(1.0, 1.0, 3.0, 3.0)],
//!     scores: vec![0.9],
//!     labels: vec![2],
//!     masks: vec![SoftMask::new(size, 1, 1, 2, 2, vec![200, 10, 255, 0])?],
//! };
//! let dir = tempfile::tempdir()?;
//! let path = dir.path().join("oof.bin");
//! oof::write_oof(&path, &[("img0".to_string(), image.clone())])?;
//! assert_eq!(oof::read_oof(&path)?, vec![("img0".to_string(), image)]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::HashSet;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use cellseg_core::{BoxXyxy, ImageSize};

use crate::{Error, Result, SoftDetections, SoftMask};

/// The first 8 bytes of an OOF file.
pub const MAGIC: &[u8; 8] = b"CSEG-OOF";
/// The format version this crate writes and reads.
pub const VERSION: u32 = 1;
/// Longest image id, in bytes.
pub const MAX_ID_LEN: usize = 4096;
/// Largest image side accepted by the reader (a guard against garbled sizes).
pub const MAX_SIDE: usize = 1 << 16;
const TAG_IMAGE: u8 = b'I';
const TAG_END: u8 = b'E';

/// 64-bit FNV-1a.
#[derive(Clone, Copy)]
struct Fnv(u64);

impl Fnv {
    fn new() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
    fn update(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
}

fn io_err(path: &Path, source: std::io::Error) -> Error {
    Error::Io { path: path.to_path_buf(), source }
}

/// Writes an OOF file image by image (streaming: an ensemble can write each image as it is done).
///
/// Nothing appears under the final path before [`OofWriter::finish`]; dropping the writer without
/// finishing removes the temporary file.
#[derive(Debug)]
pub struct OofWriter {
    path: PathBuf,
    tmp: PathBuf,
    out: Option<BufWriter<File>>,
    ids: HashSet<String>,
    buf: Vec<u8>,
}

impl OofWriter {
    /// Starts writing `path` (through a temporary file beside it).
    ///
    /// # Errors
    /// [`Error::Io`] when the temporary file cannot be created.
    pub fn create(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let mut name = path.file_name().unwrap_or_default().to_os_string();
        name.push(format!(".tmp-{}", std::process::id()));
        let tmp = path.with_file_name(name);
        let file = File::create(&tmp).map_err(|e| io_err(&tmp, e))?;
        let mut out = BufWriter::new(file);
        let mut header = Vec::with_capacity(16);
        header.extend_from_slice(MAGIC);
        header.extend_from_slice(&VERSION.to_le_bytes());
        header.extend_from_slice(&0u32.to_le_bytes());
        out.write_all(&header).map_err(|e| io_err(&tmp, e))?;
        Ok(Self { path, tmp, out: Some(out), ids: HashSet::new(), buf: Vec::new() })
    }

    /// Appends the detections of image `id`.
    ///
    /// # Errors
    /// [`Error::Oof`] for an empty, too long or repeated id, a NaN score, or values that do not
    /// fit the format (sizes above `u32`); the errors of [`SoftDetections::validate`];
    /// [`Error::Io`].
    pub fn write_image(&mut self, id: &str, d: &SoftDetections) -> Result<()> {
        let fail_at = |detection: Option<usize>, message: String| Error::Oof {
            path: self.path.clone(),
            image: Some(self.ids.len()),
            id: Some(id.to_string()),
            detection,
            offset: None,
            message,
        };
        let fail = |message: String| fail_at(None, message);
        d.validate()?;
        if id.is_empty() || id.len() > MAX_ID_LEN {
            return Err(fail(format!("image ids must have 1 to {MAX_ID_LEN} bytes")));
        }
        if self.ids.contains(id) {
            return Err(fail("image id written twice".into()));
        }
        let size = d.image_size;
        if size.height > MAX_SIDE || size.width > MAX_SIDE {
            return Err(fail(format!(
                "image is {}x{}, more than {MAX_SIDE} pixels a side",
                size.height, size.width
            )));
        }
        let to_u32 = |v: usize, what: &str| {
            u32::try_from(v).map_err(|_| fail(format!("{what} {v} does not fit in u32")))
        };
        let buf = &mut self.buf;
        buf.clear();
        buf.push(TAG_IMAGE);
        buf.extend_from_slice(&(id.len() as u32).to_le_bytes());
        buf.extend_from_slice(id.as_bytes());
        for v in [size.height, size.width, d.boxes.len()] {
            buf.extend_from_slice(&to_u32(v, "size")?.to_le_bytes());
        }
        for k in 0..d.boxes.len() {
            let b = d.boxes[k];
            if d.scores[k].is_nan() {
                return Err(fail_at(Some(k), "NaN score".into()));
            }
            for v in [b.x1, b.y1, b.x2, b.y2, d.scores[k]] {
                buf.extend_from_slice(&v.to_le_bytes());
            }
            buf.extend_from_slice(&to_u32(d.labels[k], "label")?.to_le_bytes());
            let m = &d.masks[k];
            let (top, left, h, w) = m.rect();
            for v in [top, left, h, w] {
                buf.extend_from_slice(&(v as u32).to_le_bytes());
            }
            buf.extend_from_slice(m.as_slice());
        }
        let mut hash = Fnv::new();
        hash.update(buf);
        buf.extend_from_slice(&hash.0.to_le_bytes());
        let out = self.out.as_mut().expect("open until finish");
        out.write_all(buf).map_err(|e| io_err(&self.tmp, e))?;
        self.ids.insert(id.to_string());
        Ok(())
    }

    /// Writes the end record, flushes, and renames the file into place; returns the final path.
    ///
    /// # Errors
    /// [`Error::Io`].
    pub fn finish(mut self) -> Result<PathBuf> {
        let mut out = self.out.take().expect("open until finish");
        let mut end = Vec::with_capacity(17);
        end.push(TAG_END);
        end.extend_from_slice(&(self.ids.len() as u64).to_le_bytes());
        let mut hash = Fnv::new();
        hash.update(&end);
        end.extend_from_slice(&hash.0.to_le_bytes());
        let tmp = self.tmp.clone();
        out.write_all(&end).map_err(|e| io_err(&tmp, e))?;
        let file = out.into_inner().map_err(|e| io_err(&tmp, e.into_error()))?;
        file.sync_all().map_err(|e| io_err(&tmp, e))?;
        drop(file);
        std::fs::rename(&tmp, &self.path).map_err(|e| io_err(&self.path, e))?;
        tracing::info!(path = %self.path.display(), images = self.ids.len(), "OOF file written");
        Ok(self.path.clone())
    }
}

impl Drop for OofWriter {
    fn drop(&mut self) {
        if self.out.take().is_some() {
            // Not finished: leave nothing behind.
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// Writes `images` (id, detections) to `path` in one go.
///
/// # Errors
/// As [`OofWriter::write_image`] and [`OofWriter::finish`]; nothing is left at `path` on error.
pub fn write_oof(path: impl AsRef<Path>, images: &[(String, SoftDetections)]) -> Result<()> {
    let mut w = OofWriter::create(path)?;
    for (id, d) in images {
        w.write_image(id, d)?;
    }
    w.finish()?;
    Ok(())
}

/// Reads an OOF file image by image (an iterator of `(id, detections)` in file order).
///
/// The iterator yields one error at most (then stops); a file that ends without its end record,
/// or with bytes after it, yields an error after its last complete image.
#[derive(Debug)]
pub struct OofReader {
    path: PathBuf,
    input: BufReader<File>,
    offset: u64,
    images: usize,
    ids: HashSet<String>,
    done: bool,
}

/// Where the reader is, for error messages.
#[derive(Default, Clone)]
struct At {
    id: Option<String>,
    detection: Option<usize>,
}

impl OofReader {
    /// Opens `path` and checks its header.
    ///
    /// # Errors
    /// [`Error::Io`] when it cannot be opened, [`Error::Oof`] for a wrong magic or version.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let file =
            File::open(&path).map_err(|source| Error::Read { path: path.clone(), source })?;
        let mut r = Self {
            path,
            input: BufReader::with_capacity(1 << 16, file),
            offset: 0,
            images: 0,
            ids: HashSet::new(),
            done: false,
        };
        let mut header = [0u8; 16];
        r.fill(&mut header, None, &At::default(), "the header")?;
        if &header[..8] != MAGIC {
            return Err(r.error(0, &At::default(), "not a cellseg OOF file (wrong magic)".into()));
        }
        let version = u32::from_le_bytes(header[8..12].try_into().expect("4 bytes"));
        if version != VERSION {
            return Err(r.error(
                8,
                &At::default(),
                format!("format version {version}; this reader knows version {VERSION}"),
            ));
        }
        let flags = u32::from_le_bytes(header[12..16].try_into().expect("4 bytes"));
        if flags != 0 {
            return Err(r.error(12, &At::default(), format!("unknown flags 0x{flags:08x}")));
        }
        Ok(r)
    }

    fn error(&self, offset: u64, at: &At, message: String) -> Error {
        Error::Oof {
            path: self.path.clone(),
            // Header errors belong to no image.
            image: (offset >= 16).then_some(self.images),
            id: at.id.clone(),
            detection: at.detection,
            offset: Some(offset),
            message,
        }
    }

    /// Reads exactly `buf.len()` bytes, hashing them; `what` names the part for a truncation.
    fn fill(&mut self, buf: &mut [u8], hash: Option<&mut Fnv>, at: &At, what: &str) -> Result<()> {
        let start = self.offset;
        let mut got = 0;
        while got < buf.len() {
            match self.input.read(&mut buf[got..]) {
                Ok(0) => {
                    return Err(self.error(
                        start + got as u64,
                        at,
                        format!("truncated: the file ends inside {what}"),
                    ));
                }
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(source) => return Err(Error::Read { path: self.path.clone(), source }),
            }
        }
        self.offset += buf.len() as u64;
        if let Some(h) = hash {
            h.update(buf);
        }
        Ok(())
    }

    fn u32(&mut self, hash: &mut Fnv, at: &At, what: &str) -> Result<u32> {
        let mut b = [0u8; 4];
        self.fill(&mut b, Some(hash), at, what)?;
        Ok(u32::from_le_bytes(b))
    }

    fn check_sum(&mut self, hash: Fnv, at: &At, what: &str) -> Result<()> {
        let offset = self.offset;
        let mut b = [0u8; 8];
        self.fill(&mut b, None, at, what)?;
        if u64::from_le_bytes(b) != hash.0 {
            return Err(self.error(offset, at, format!("checksum mismatch: {what} is corrupted")));
        }
        Ok(())
    }

    fn next_record(&mut self) -> Result<Option<(String, SoftDetections)>> {
        let mut at = At::default();
        let tag_offset = self.offset;
        let mut hash = Fnv::new();
        let mut tag = [0u8; 1];
        self.fill(&mut tag, Some(&mut hash), &at, "the next record (no end record)")?;
        match tag[0] {
            TAG_END => {
                let mut n = [0u8; 8];
                self.fill(&mut n, Some(&mut hash), &at, "the end record")?;
                self.check_sum(hash, &at, "the end record")?;
                let n = u64::from_le_bytes(n);
                if n != self.images as u64 {
                    return Err(self.error(
                        tag_offset,
                        &at,
                        format!(
                            "the end record counts {n} images but the file holds {}",
                            self.images
                        ),
                    ));
                }
                let mut extra = [0u8; 1];
                match self.input.read(&mut extra) {
                    Ok(0) => Ok(None),
                    Ok(_) => Err(self.error(self.offset, &at, "bytes after the end record".into())),
                    Err(source) => Err(Error::Read { path: self.path.clone(), source }),
                }
            }
            TAG_IMAGE => self.image(&mut at, hash).map(Some),
            other => Err(self.error(
                tag_offset,
                &at,
                format!("unknown record tag 0x{other:02x} (expected 'I' or 'E')"),
            )),
        }
    }

    fn image(&mut self, at: &mut At, mut hash: Fnv) -> Result<(String, SoftDetections)> {
        let id_offset = self.offset;
        let id_len = self.u32(&mut hash, at, "an image id length")? as usize;
        if id_len == 0 || id_len > MAX_ID_LEN {
            return Err(self.error(
                id_offset,
                at,
                format!("image id length {id_len} is outside 1..={MAX_ID_LEN}"),
            ));
        }
        let mut id = vec![0u8; id_len];
        self.fill(&mut id, Some(&mut hash), at, "an image id")?;
        let id = String::from_utf8(id)
            .map_err(|_| self.error(id_offset + 4, at, "image id is not UTF-8".into()))?;
        at.id = Some(id.clone());
        if self.ids.contains(&id) {
            return Err(self.error(id_offset, at, "image id appears twice".into()));
        }
        let size_offset = self.offset;
        let height = self.u32(&mut hash, at, "the image header")? as usize;
        let width = self.u32(&mut hash, at, "the image header")? as usize;
        let count = self.u32(&mut hash, at, "the image header")? as usize;
        if height > MAX_SIDE || width > MAX_SIDE {
            return Err(self.error(
                size_offset,
                at,
                format!("image size {height}x{width} is above {MAX_SIDE} a side"),
            ));
        }
        let size = ImageSize::new(height, width);
        let mut d = SoftDetections {
            image_size: size,
            boxes: Vec::with_capacity(count.min(1 << 16)),
            scores: Vec::with_capacity(count.min(1 << 16)),
            labels: Vec::with_capacity(count.min(1 << 16)),
            masks: Vec::with_capacity(count.min(1 << 16)),
        };
        for k in 0..count {
            at.detection = Some(k);
            let det_offset = self.offset;
            let mut fixed = [0u8; 40];
            self.fill(&mut fixed, Some(&mut hash), at, "a detection")?;
            let f = |i: usize| f32::from_le_bytes(fixed[4 * i..4 * i + 4].try_into().expect("4"));
            let u = |i: usize| {
                u32::from_le_bytes(fixed[4 * i..4 * i + 4].try_into().expect("4")) as usize
            };
            let (score, label) = (f(4), u(5));
            if score.is_nan() {
                return Err(self.error(det_offset + 16, at, "NaN score".into()));
            }
            let (top, left, h, w) = (u(6), u(7), u(8), u(9));
            if top + h > height || left + w > width {
                return Err(self.error(
                    det_offset + 24,
                    at,
                    format!(
                        "mask rectangle (top {top}, left {left}, {h}x{w}) leaves the {height}x{width} image"
                    ),
                ));
            }
            let mut data = vec![0u8; h * w];
            self.fill(&mut data, Some(&mut hash), at, "a soft mask")?;
            let mask = SoftMask::new(size, top, left, h, w, data)
                .map_err(|e| self.error(det_offset + 24, at, e.to_string()))?;
            d.boxes.push(BoxXyxy::new(f(0), f(1), f(2), f(3)));
            d.scores.push(score);
            d.labels.push(label);
            d.masks.push(mask);
        }
        at.detection = None;
        self.check_sum(hash, at, "the image record")?;
        self.images += 1;
        self.ids.insert(id.clone());
        Ok((id, d))
    }
}

impl Iterator for OofReader {
    type Item = Result<(String, SoftDetections)>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.next_record() {
            Ok(Some(x)) => Some(Ok(x)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

/// Reads a whole OOF file, images in file order.
///
/// # Errors
/// As [`OofReader::open`] and its iterator.
pub fn read_oof(path: impl AsRef<Path>) -> Result<Vec<(String, SoftDetections)>> {
    let reader = OofReader::open(&path)?;
    let images = reader.collect::<Result<Vec<_>>>()?;
    tracing::info!(path = %path.as_ref().display(), images = images.len(), "OOF file read");
    Ok(images)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn image(n: usize, seed: u8) -> SoftDetections {
        let size = ImageSize::new(20, 30);
        let masks: Vec<SoftMask> = (0..n)
            .map(|k| {
                let (h, w) = (1 + k % 5, 2 + k % 7);
                let data =
                    (0..h * w).map(|i| (i as u8).wrapping_mul(37).wrapping_add(seed)).collect();
                SoftMask::new(size, k % 10, k % 20, h, w, data).unwrap()
            })
            .collect();
        SoftDetections {
            image_size: size,
            boxes: (0..n).map(|k| BoxXyxy::new(k as f32, 1.5, k as f32 + 4.25, 9.0)).collect(),
            scores: (0..n).map(|k| 1.0 / (k as f32 + 1.0)).collect(),
            labels: (0..n).map(|k| k % 3).collect(),
            masks,
        }
    }

    fn written(images: &[(String, SoftDetections)]) -> (tempfile::TempDir, PathBuf, Vec<u8>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("oof.bin");
        write_oof(&path, images).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        (dir, path, bytes)
    }

    #[test]
    fn round_trip_keeps_order_and_values() {
        let images = vec![
            ("b".to_string(), image(7, 1)),
            ("a".to_string(), image(0, 2)),
            ("c".to_string(), image(3, 3)),
        ];
        let (dir, path, _) = written(&images);
        assert_eq!(read_oof(&path).unwrap(), images);
        // Only the final file is left.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn every_truncation_is_an_error_naming_the_file() {
        let images = vec![("x1".to_string(), image(4, 9)), ("x2".to_string(), image(2, 4))];
        let (dir, path, bytes) = written(&images);
        let cut = dir.path().join("cut.bin");
        for len in 0..bytes.len() {
            std::fs::write(&cut, &bytes[..len]).unwrap();
            let err = read_oof(&cut).unwrap_err().to_string();
            assert!(err.contains("cut.bin") && err.contains("truncated"), "{len}: {err}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        std::fs::write(&cut, &longer).unwrap();
        assert!(read_oof(&cut).unwrap_err().to_string().contains("after the end record"));
        let _ = path;
    }

    #[test]
    fn changed_bytes_are_errors() {
        let images = vec![("x1".to_string(), image(4, 9)), ("x2".to_string(), image(2, 4))];
        let (dir, _, bytes) = written(&images);
        let bad = dir.path().join("bad.bin");
        for pos in 0..bytes.len() {
            let mut b = bytes.clone();
            b[pos] ^= 0x5a;
            std::fs::write(&bad, &b).unwrap();
            assert!(read_oof(&bad).is_err(), "byte {pos} changed but the file read");
        }
        let mut b = bytes.clone();
        b[..8].copy_from_slice(b"NOT-OOF!");
        std::fs::write(&bad, &b).unwrap();
        assert!(read_oof(&bad).unwrap_err().to_string().contains("wrong magic"));
    }

    #[test]
    fn errors_name_image_and_detection() {
        let images = vec![("first".to_string(), image(2, 0)), ("second".to_string(), image(3, 0))];
        let (dir, _, mut bytes) = written(&images);
        // Corrupt the mask height of detection 1 of "second" to leave its image.
        let rec1 = 16 + (1 + 4 + 5 + 12) + 2 * 40 + 2 + 2 * 3 + 8;
        let det1 = rec1 + 1 + 4 + 6 + 12 + 40 + 2;
        bytes[det1 + 32..det1 + 36].copy_from_slice(&1000u32.to_le_bytes());
        let bad = dir.path().join("bad.bin");
        std::fs::write(&bad, &bytes).unwrap();
        let err = read_oof(&bad).unwrap_err();
        let text = err.to_string();
        assert!(matches!(&err, Error::Oof { image: Some(1), detection: Some(1), .. }), "{text}");
        assert!(text.contains("second") && text.contains("leaves the 20x30 image"), "{text}");
    }

    #[test]
    fn writer_rejects_bad_input_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("oof.bin");
        let mut nan = image(2, 0);
        nan.scores[1] = f32::NAN;
        let err = write_oof(&path, &[("a".into(), nan)]).unwrap_err();
        assert!(matches!(err, Error::Oof { detection: Some(1), .. }), "{err}");
        let err =
            write_oof(&path, &[("a".into(), image(1, 0)), ("a".into(), image(1, 0))]).unwrap_err();
        assert!(err.to_string().contains("twice"), "{err}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "no file left behind");
    }

    proptest! {
        #[test]
        fn round_trip_of_random_images(ns in proptest::collection::vec(0usize..12, 0..5), seed in any::<u8>()) {
            let images: Vec<(String, SoftDetections)> =
                ns.iter().enumerate().map(|(k, &n)| (format!("img{k}"), image(n, seed))).collect();
            let (_dir, path, _) = written(&images);
            prop_assert_eq!(read_oof(&path).unwrap(), images);
        }
    }
}
