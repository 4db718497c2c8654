//! 8-bit images (grayscale or RGB), and reading / writing them as PNG or TIFF.
//!
//! Sartorius and LIVECell images are 8-bit grayscale. The seed reads them with `cv2.imread`, which
//! gives three identical BGR channels; cellseg keeps one channel and expands it only when
//! normalising ([`crate::normalize`]), which is equivalent and three times cheaper.

use std::io::Cursor;
use std::path::{Path, PathBuf};

use cellseg_core::ImageSize;

use crate::{Error, Result};

/// An 8-bit image, row-major, channels interleaved (`HWC`), 1 (gray) or 3 (RGB) channels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    size: ImageSize,
    channels: usize,
    data: Vec<u8>,
}

impl Image {
    /// An image from its interleaved pixels.
    ///
    /// # Errors
    /// [`cellseg_core::Error::BufferSize`] when `data.len() != H * W * channels` or `channels` is
    /// not 1 or 3.
    pub fn new(size: ImageSize, channels: usize, data: Vec<u8>) -> Result<Self> {
        if !(channels == 1 || channels == 3) || data.len() != size.pixels() * channels {
            return Err(cellseg_core::Error::BufferSize {
                what: "Image (HWC, 1 or 3 channels)",
                shape: vec![size.height, size.width, channels],
                expected: size.pixels() * channels,
                got: data.len(),
            }
            .into());
        }
        Ok(Self { size, channels, data })
    }

    /// A uniform image.
    pub fn filled(size: ImageSize, channels: usize, value: u8) -> Self {
        assert!(channels == 1 || channels == 3, "channels must be 1 or 3");
        Self { size, channels, data: vec![value; size.pixels() * channels] }
    }

    /// Height × width.
    pub fn size(&self) -> ImageSize {
        self.size
    }

    /// 1 (gray) or 3 (RGB).
    pub fn channels(&self) -> usize {
        self.channels
    }

    /// Interleaved pixels.
    pub fn as_slice(&self) -> &[u8] {
        &self.data
    }

    /// Interleaved pixels, mutable.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.data
    }

    /// The value of channel `c` at `(row, col)`.
    ///
    /// # Panics
    /// When the pixel or channel is outside the image.
    pub fn get(&self, row: usize, col: usize, c: usize) -> u8 {
        assert!(row < self.size.height && col < self.size.width && c < self.channels);
        self.data[(row * self.size.width + col) * self.channels + c]
    }

    /// One gray channel: a 1-channel image as it is; RGB by ITU-R BT.601 luma
    /// (`0.299 R + 0.587 G + 0.114 B`) in PIL's fixed point (`convert("L")`:
    /// `(19595 R + 38470 G + 7471 B + 2^15) >> 16`), so a gray image stored as RGB comes back
    /// unchanged.
    pub fn to_gray(&self) -> Self {
        if self.channels == 1 {
            return self.clone();
        }
        let data = self
            .data
            .chunks_exact(3)
            .map(|p| {
                let y = 19595 * u32::from(p[0]) + 38470 * u32::from(p[1]) + 7471 * u32::from(p[2]);
                ((y + 0x8000) >> 16) as u8
            })
            .collect();
        Self { size: self.size, channels: 1, data }
    }

    /// The rectangle `[top, top+h) × [left, left+w)` as a new image.
    ///
    /// # Panics
    /// When the rectangle leaves the image.
    pub fn crop(&self, top: usize, left: usize, h: usize, w: usize) -> Self {
        assert!(top + h <= self.size.height && left + w <= self.size.width, "crop outside image");
        let ch = self.channels;
        let mut data = Vec::with_capacity(h * w * ch);
        for r in top..top + h {
            let start = (r * self.size.width + left) * ch;
            data.extend_from_slice(&self.data[start..start + w * ch]);
        }
        Self { size: ImageSize::new(h, w), channels: ch, data }
    }
}

/// Decodes a PNG or TIFF file (by content) into an [`Image`].
///
/// Gray and gray+alpha become 1 channel, RGB and RGBA 3 channels (alpha dropped, as DSB2018's RGBA
/// PNGs need); 16-bit images are scaled to 8 bits (values ≤ 255 are kept as they are, otherwise
/// `v * 255 / max`). LZW-compressed TIFFs (LIVECell) are supported.
///
/// # Errors
/// [`Error::Io`] when the file cannot be read, [`Error::ImageDecode`] when it is not a decodable image.
pub fn read_image(path: &Path) -> Result<Image> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    decode_image(&bytes, path)
}

/// Reads only the header of an image file and returns its size.
///
/// # Errors
/// As [`read_image`].
pub fn read_image_size(path: &Path) -> Result<ImageSize> {
    let reader = image::ImageReader::open(path)
        .map_err(|e| Error::io(path, e))?
        .with_guessed_format()
        .map_err(|e| Error::io(path, e))?;
    let (w, h) = reader.into_dimensions().map_err(|e| decode_error(path, e))?;
    Ok(ImageSize::new(h as usize, w as usize))
}

fn decode_error(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::ImageDecode { path: path.to_path_buf(), message: e.to_string() }
}

/// Decodes image `bytes` (`path` is used in errors).
///
/// # Errors
/// [`Error::ImageDecode`].
pub fn decode_image(bytes: &[u8], path: &Path) -> Result<Image> {
    let img = image::ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| decode_error(path, e))?
        .decode()
        .map_err(|e| decode_error(path, e))?;
    let size = ImageSize::new(img.height() as usize, img.width() as usize);
    use image::DynamicImage as D;
    let (channels, data) = match img {
        D::ImageLuma8(b) => (1, b.into_raw()),
        D::ImageLumaA8(b) => (1, b.into_raw().chunks_exact(2).map(|p| p[0]).collect()),
        D::ImageRgb8(b) => (3, b.into_raw()),
        D::ImageRgba8(b) => {
            (3, b.into_raw().chunks_exact(4).flat_map(|p| [p[0], p[1], p[2]]).collect())
        }
        D::ImageLuma16(b) => (1, scale16(&b.into_raw())),
        D::ImageLumaA16(b) => {
            (1, scale16(&b.into_raw().chunks_exact(2).map(|p| p[0]).collect::<Vec<_>>()))
        }
        D::ImageRgb16(b) => (3, scale16(&b.into_raw())),
        D::ImageRgba16(b) => (
            3,
            scale16(
                &b.into_raw().chunks_exact(4).flat_map(|p| [p[0], p[1], p[2]]).collect::<Vec<_>>(),
            ),
        ),
        other => (3, other.to_rgb8().into_raw()),
    };
    Image::new(size, channels, data)
}

fn scale16(v: &[u16]) -> Vec<u8> {
    let max = v.iter().copied().max().unwrap_or(0);
    if max <= 255 {
        v.iter().map(|&x| x as u8).collect()
    } else {
        v.iter().map(|&x| (x as u32 * 255 / max as u32) as u8).collect()
    }
}

/// Reads a 16-bit (or 8-bit) single-channel label image (0 = background, each instance an id),
/// as StarDist's `mask2d.tif`.
///
/// # Errors
/// [`Error::Io`], or [`Error::ImageDecode`] when it is not a single-channel image.
pub fn read_label_image(path: &Path) -> Result<(ImageSize, Vec<u16>)> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let img = image::ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| decode_error(path, e))?
        .decode()
        .map_err(|e| decode_error(path, e))?;
    let size = ImageSize::new(img.height() as usize, img.width() as usize);
    let data = match img {
        image::DynamicImage::ImageLuma16(b) => b.into_raw(),
        image::DynamicImage::ImageLuma8(b) => b.into_raw().into_iter().map(u16::from).collect(),
        other => {
            return Err(decode_error(
                path,
                format!("label image must be single-channel, got {:?}", other.color()),
            ));
        }
    };
    Ok((size, data))
}

/// Writes `image` as PNG (8-bit gray or RGB) to a temporary file next to `path`, then renames it.
///
/// # Errors
/// [`Error::ImageEncode`] / [`Error::Io`].
pub fn write_png(image: &Image, path: &Path) -> Result<()> {
    let color = if image.channels == 1 {
        image::ExtendedColorType::L8
    } else {
        image::ExtendedColorType::Rgb8
    };
    let mut buf = Vec::new();
    let enc = image::codecs::png::PngEncoder::new_with_quality(
        &mut buf,
        image::codecs::png::CompressionType::Fast,
        image::codecs::png::FilterType::Sub,
    );
    use image::ImageEncoder;
    enc.write_image(&image.data, image.size.width as u32, image.size.height as u32, color)
        .map_err(|e| Error::ImageEncode { path: path.to_path_buf(), message: e.to_string() })?;
    write_atomically(path, &buf)
}

/// Writes an 8-bit gray `image` as an LZW-compressed TIFF (the LIVECell format), atomically.
///
/// # Errors
/// [`Error::ImageEncode`] when the image is not gray, [`Error::Io`].
pub fn write_tiff_lzw(image: &Image, path: &Path) -> Result<()> {
    let enc_err = |m: String| Error::ImageEncode { path: path.to_path_buf(), message: m };
    if image.channels != 1 {
        return Err(enc_err("LIVECell TIFFs are 8-bit gray; got an RGB image".into()));
    }
    let mut buf = Cursor::new(Vec::new());
    {
        let mut enc = tiff::encoder::TiffEncoder::new(&mut buf)
            .map_err(|e| enc_err(e.to_string()))?
            .with_compression(tiff::encoder::Compression::Lzw);
        enc.write_image::<tiff::encoder::colortype::Gray8>(
            image.size.width as u32,
            image.size.height as u32,
            &image.data,
        )
        .map_err(|e| enc_err(e.to_string()))?;
    }
    write_atomically(path, buf.get_ref())
}

/// Writes `bytes` to `path` through a temporary file in the same folder and a rename, so that a
/// crash never leaves a partial file.
///
/// # Errors
/// [`Error::Io`].
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp: PathBuf = dir.join(format!(".{name}.tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes).map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn png_and_tiff_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let size = ImageSize::new(7, 9);
        let img = Image::new(size, 1, (0..63).map(|v| (v * 4) as u8).collect()).unwrap();
        let png = dir.path().join("a.png");
        write_png(&img, &png).unwrap();
        assert_eq!(read_image(&png).unwrap(), img);
        assert_eq!(read_image_size(&png).unwrap(), size);
        let tif = dir.path().join("a.tif");
        write_tiff_lzw(&img, &tif).unwrap();
        assert_eq!(read_image(&tif).unwrap(), img);
    }

    #[test]
    fn to_gray_equals_pil_convert_l() {
        // Pillow 13.0.0, `Image.new("RGB", (16, 1)).putdata(px).convert("L")`.
        let px: [[u8; 3]; 16] = [
            [0, 0, 0],
            [255, 255, 255],
            [255, 0, 0],
            [0, 255, 0],
            [0, 0, 255],
            [1, 2, 3],
            [127, 128, 129],
            [200, 10, 90],
            [68, 32, 130],
            [60, 253, 230],
            [241, 194, 107],
            [48, 249, 14],
            [199, 221, 1],
            [228, 136, 117],
            [52, 162, 15],
            [11, 13, 4],
        ];
        let pil = [0, 255, 76, 150, 29, 2, 128, 76, 54, 193, 198, 162, 189, 161, 112, 11];
        let rgb = Image::new(ImageSize::new(1, 16), 3, px.concat()).unwrap();
        let gray = rgb.to_gray();
        assert_eq!((gray.channels(), gray.as_slice()), (1, &pil[..]));
        let replicated: Vec<u8> = (0..=255u8).flat_map(|v| [v, v, v]).collect();
        let g = Image::new(ImageSize::new(16, 16), 3, replicated).unwrap().to_gray();
        assert!(g.as_slice().iter().enumerate().all(|(i, &v)| v as usize == i));
        assert_eq!(g.to_gray(), g);
    }

    #[test]
    fn corrupt_files_name_the_path() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["bad.png", "bad.tif"] {
            let p = dir.path().join(name);
            let mut bytes = if name.ends_with("png") {
                b"\x89PNG\r\n\x1a\n".to_vec()
            } else {
                b"II*\x00".to_vec()
            };
            bytes.extend_from_slice(&[7u8; 40]);
            std::fs::write(&p, bytes).unwrap();
            let err = read_image(&p).unwrap_err();
            assert!(matches!(err, Error::ImageDecode { .. }), "{err}");
            assert!(err.to_string().contains(name), "{err}");
        }
        let err = read_image(&dir.path().join("missing.png")).unwrap_err();
        assert!(err.to_string().contains("missing.png"), "{err}");
    }
}

/// `ndarray` interop (feature `ndarray`): an image as a `[height, width, channels]` array.
#[cfg(feature = "ndarray")]
mod array {
    use ndarray::{Array3, ArrayView3};

    use super::Image;
    use crate::Result;
    use cellseg_core::ImageSize;

    impl Image {
        /// The pixels as a `[height, width, channels]` view (no copy).
        pub fn view(&self) -> ArrayView3<'_, u8> {
            let s = self.size();
            ArrayView3::from_shape((s.height, s.width, self.channels()), self.as_slice())
                .expect("buffer matches shape")
        }

        /// An image from a `[height, width, channels]` array (1 or 3 channels); the buffer is
        /// reused when the array is in standard layout, copied otherwise.
        ///
        /// # Errors
        /// [`cellseg_core::Error::BufferSize`] for another channel count.
        pub fn from_array(a: Array3<u8>) -> Result<Self> {
            let (h, w, c) = a.dim();
            let data = if a.is_standard_layout() && a.len() == h * w * c {
                let n = a.len();
                let (mut v, offset) = a.into_raw_vec_and_offset();
                match offset.unwrap_or(0) {
                    0 => {
                        v.truncate(n);
                        v
                    }
                    o => v[o..o + n].to_vec(),
                }
            } else {
                a.iter().copied().collect()
            };
            Self::new(ImageSize::new(h, w), c, data)
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn images_round_trip_through_arrays() {
            let a = Array3::from_shape_fn((4, 5, 3), |(r, c, k)| (r * 15 + c * 3 + k) as u8);
            let owned = a.clone();
            let ptr = owned.as_ptr();
            let img = Image::from_array(owned).unwrap();
            assert_eq!(img.as_slice().as_ptr(), ptr);
            assert_eq!(img.view(), a);
            assert_eq!(img.get(1, 2, 2), 15 + 6 + 2);
            assert!(Image::from_array(Array3::zeros((2, 2, 2))).is_err());
            // Channels first, permuted to HWC: copied in row-major order.
            let chw = Array3::from_shape_fn((3, 4, 5), |(k, r, c)| (r * 15 + c * 3 + k) as u8);
            let hwc = chw.permuted_axes([1, 2, 0]);
            assert_eq!(Image::from_array(hwc).unwrap(), img);
        }
    }
}
