//! Turning a captured [`Frame`] into PNG or JPEG bytes, optionally scaled
//! down, with the factor that maps image coordinates back to the screen.

use crate::error::DesktopError;
use crate::x11::capture::Frame;
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer, images::Image};
use serde::{Deserialize, Serialize};

/// Output image format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Lossless PNG (what Bytebot's `screenshot` returns).
    #[default]
    Png,
    /// JPEG at a chosen quality; far smaller for models.
    Jpeg,
}

impl Format {
    /// The MIME type.
    pub fn mime(self) -> &'static str {
        match self {
            Format::Png => "image/png",
            Format::Jpeg => "image/jpeg",
        }
    }
}

/// How to encode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EncodeOptions {
    /// PNG or JPEG.
    pub format: Format,
    /// JPEG quality, 1–100.
    pub quality: u8,
    /// Scale down (keeping the aspect ratio) when wider than this.
    pub max_width: Option<u32>,
    /// Draw the mouse pointer into the image (X captures leave it out).
    pub cursor: bool,
}

impl Default for EncodeOptions {
    fn default() -> Self {
        Self {
            format: Format::Png,
            quality: 80,
            max_width: None,
            cursor: false,
        }
    }
}

/// An encoded image and how it relates to the screen.
pub struct Encoded {
    /// The file bytes.
    pub bytes: Vec<u8>,
    /// Width of the encoded image.
    pub width: u32,
    /// Height of the encoded image.
    pub height: u32,
    /// Screen pixels per image pixel: multiply image coordinates by this
    /// (then add the region's origin) to get screen coordinates.
    pub scale: f64,
}

/// Encodes a frame as the options ask.
pub fn encode(frame: &Frame, opts: &EncodeOptions) -> Result<Encoded, DesktopError> {
    let scaled;
    let (frame, scale) = match opts.max_width {
        Some(max) if max < frame.width => {
            scaled = downscale(frame, max)?;
            (&scaled, f64::from(frame.width) / f64::from(scaled.width))
        }
        _ => (frame, 1.0),
    };
    let rgb = to_rgb(frame);
    let bytes = match opts.format {
        Format::Png => png_bytes(&rgb, frame.width, frame.height)?,
        Format::Jpeg => jpeg_bytes(&rgb, frame.width, frame.height, opts.quality)?,
    };
    Ok(Encoded {
        bytes,
        width: frame.width,
        height: frame.height,
        scale,
    })
}

/// BGRX to packed RGB.
fn to_rgb(frame: &Frame) -> Vec<u8> {
    let mut rgb = Vec::with_capacity(frame.bgrx.len() / 4 * 3);
    for px in frame.bgrx.chunks_exact(4) {
        rgb.extend_from_slice(&[px[2], px[1], px[0]]);
    }
    rgb
}

fn png_bytes(rgb: &[u8], width: u32, height: u32) -> Result<Vec<u8>, DesktopError> {
    let mut out = Vec::with_capacity(rgb.len() / 4);
    let mut encoder = png::Encoder::new(&mut out, width, height);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    // fdeflate's fast mode with the Up filter: screens are mostly flat areas
    // repeated row to row, which Up turns into runs of zeros.
    encoder.set_compression(png::Compression::Fast);
    encoder.set_filter(png::Filter::Up);
    let mut writer = encoder.write_header().map_err(png_err)?;
    writer.write_image_data(rgb).map_err(png_err)?;
    writer.finish().map_err(png_err)?;
    Ok(out)
}

fn png_err(e: png::EncodingError) -> DesktopError {
    DesktopError::Failed(format!("PNG encoding failed: {e}"))
}

fn jpeg_bytes(rgb: &[u8], width: u32, height: u32, quality: u8) -> Result<Vec<u8>, DesktopError> {
    let (w, h) = (dim(width)?, dim(height)?);
    let mut out = Vec::with_capacity(rgb.len() / 10);
    let encoder = jpeg_encoder::Encoder::new(&mut out, quality.clamp(1, 100));
    encoder
        .encode(rgb, w, h, jpeg_encoder::ColorType::Rgb)
        .map_err(|e| DesktopError::Failed(format!("JPEG encoding failed: {e}")))?;
    Ok(out)
}

fn dim(v: u32) -> Result<u16, DesktopError> {
    u16::try_from(v).map_err(|_| DesktopError::Failed(format!("{v} pixels is too large for JPEG")))
}

/// Scales a frame down to `max_width`, keeping the aspect ratio.
fn downscale(frame: &Frame, max_width: u32) -> Result<Frame, DesktopError> {
    let width = max_width.max(1);
    let height = ((u64::from(frame.height) * u64::from(width) + u64::from(frame.width) / 2)
        / u64::from(frame.width))
    .max(1) as u32;
    let src = Image::from_vec_u8(
        frame.width,
        frame.height,
        frame.bgrx.clone(),
        PixelType::U8x4,
    )
    .map_err(|e| DesktopError::Failed(format!("cannot scale the screenshot: {e}")))?;
    let mut dst = Image::new(width, height, PixelType::U8x4);
    Resizer::new()
        .resize(
            &src,
            &mut dst,
            &ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Bilinear)),
        )
        .map_err(|e| DesktopError::Failed(format!("cannot scale the screenshot: {e}")))?;
    Ok(Frame {
        width,
        height,
        bgrx: dst.into_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(width: u32, height: u32) -> Frame {
        let mut bgrx = Vec::new();
        for y in 0..height {
            for x in 0..width {
                bgrx.extend_from_slice(&[
                    (x % 256) as u8,
                    (y % 256) as u8,
                    ((x + y) % 256) as u8,
                    0,
                ]);
            }
        }
        Frame {
            width,
            height,
            bgrx,
        }
    }

    #[test]
    fn png_round_trips_every_pixel() {
        let frame = pattern(37, 19);
        let out = encode(&frame, &EncodeOptions::default()).unwrap();
        let decoder = png::Decoder::new(std::io::Cursor::new(out.bytes));
        let mut reader = decoder.read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut buf).unwrap();
        assert_eq!((info.width, info.height), (37, 19));
        for y in 0..19 {
            for x in 0..37 {
                let i = ((y * 37 + x) * 3) as usize;
                assert_eq!([buf[i], buf[i + 1], buf[i + 2]], frame.rgb_at(x, y));
            }
        }
    }

    #[test]
    fn scaling_reports_the_factor_back_to_the_screen() {
        let frame = pattern(1280, 960);
        let opts = EncodeOptions {
            format: Format::Jpeg,
            quality: 70,
            max_width: Some(640),
            cursor: false,
        };
        let out = encode(&frame, &opts).unwrap();
        assert_eq!((out.width, out.height), (640, 480));
        assert!((out.scale - 2.0).abs() < 1e-9);
        assert_eq!(&out.bytes[..2], &[0xff, 0xd8], "JPEG magic");
        // No upscaling when the screen is already narrower.
        let out = encode(
            &frame,
            &EncodeOptions {
                max_width: Some(4000),
                ..opts
            },
        )
        .unwrap();
        assert_eq!(out.width, 1280);
        assert!((out.scale - 1.0).abs() < 1e-9);
    }
}
