//! Screen capture: MIT-SHM when the server offers it (one copy, ~1 ms for a
//! 1280×960 screen), plain GetImage otherwise.

use crate::error::DesktopError;
use memmap2::Mmap;
use x11rb::connection::{Connection, RequestConnection};
use x11rb::protocol::shm::{self, ConnectionExt as _};
use x11rb::protocol::xproto::{ConnectionExt as _, ImageFormat, ImageOrder, Window};
use x11rb::rust_connection::RustConnection;

/// A captured rectangle of the screen, 4 bytes a pixel in B, G, R, X order.
#[derive(Clone)]
pub struct Frame {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// `width * height * 4` bytes, rows top to bottom, no padding.
    pub bgrx: Vec<u8>,
}

impl Frame {
    /// The colour of one pixel as `[r, g, b]`.
    pub fn rgb_at(&self, x: u32, y: u32) -> [u8; 3] {
        let i = ((y * self.width + x) * 4) as usize;
        [self.bgrx[i + 2], self.bgrx[i + 1], self.bgrx[i]]
    }
}

/// A rectangle of the screen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Region {
    /// Left edge.
    pub x: u32,
    /// Top edge.
    pub y: u32,
    /// Width, at least 1.
    pub width: u32,
    /// Height, at least 1.
    pub height: u32,
}

impl Region {
    /// Checks the region lies on a `screen_w`×`screen_h` screen.
    pub fn check(&self, screen_w: u32, screen_h: u32) -> Result<(), DesktopError> {
        if self.width == 0 || self.height == 0 {
            return Err(DesktopError::field(
                "region",
                "width and height must be at least 1",
            ));
        }
        if self.x.saturating_add(self.width) > screen_w
            || self.y.saturating_add(self.height) > screen_h
        {
            return Err(DesktopError::field(
                "region",
                format!(
                    "{}x{}+{}+{} does not fit the {screen_w}x{screen_h} screen",
                    self.width, self.height, self.x, self.y
                ),
            ));
        }
        Ok(())
    }
}

/// Refuses pixel formats we don't decode: we read 32-bit little-endian BGRX.
pub fn check_pixel_format(conn: &RustConnection, screen_num: usize) -> Result<(), DesktopError> {
    let setup = conn.setup();
    let Some(screen) = setup.roots.get(screen_num) else {
        return Err(DesktopError::Unavailable(format!("no screen {screen_num}")));
    };
    let bpp = setup
        .pixmap_formats
        .iter()
        .find(|f| f.depth == screen.root_depth)
        .map(|f| f.bits_per_pixel);
    if bpp != Some(32) || setup.image_byte_order != ImageOrder::LSB_FIRST {
        return Err(DesktopError::Unavailable(format!(
            "unsupported screen format: depth {} at {:?} bits per pixel; start Xvfb with a 24-bit screen (e.g. -screen 0 1280x960x24)",
            screen.root_depth, bpp
        )));
    }
    Ok(())
}

/// A shared-memory segment the server writes captures into.
pub struct ShmCapture {
    seg: shm::Seg,
    map: Mmap,
}

impl ShmCapture {
    /// Largest screen we size the segment for: 8K.
    const MAX_BYTES: usize = 7680 * 4320 * 4;

    /// Sets up a segment, or `None` when MIT-SHM (with fd passing) is missing.
    pub fn new(conn: &RustConnection) -> Option<Self> {
        let present = conn
            .extension_information(shm::X11_EXTENSION_NAME)
            .ok()
            .flatten()
            .is_some();
        if !present {
            return None;
        }
        let version = conn.shm_query_version().ok()?.reply().ok()?;
        // create_segment (the server makes the memory and hands us an fd) is SHM 1.2.
        if (version.major_version, version.minor_version) < (1, 2) {
            return None;
        }
        let seg = conn.generate_id().ok()?;
        let reply = conn
            .shm_create_segment(seg, Self::MAX_BYTES as u32, false)
            .ok()?
            .reply()
            .ok()?;
        let file = std::fs::File::from(reply.shm_fd);
        // SAFETY: the segment lives as long as `seg` is attached; only the X
        // server writes to it, and only while we wait for a GetImage reply.
        let map = unsafe { memmap2::MmapOptions::new().len(Self::MAX_BYTES).map(&file) }.ok()?;
        Some(Self { seg, map })
    }
}

/// Captures `region` of `root`, through SHM when available.
pub fn capture(
    conn: &RustConnection,
    root: Window,
    shm: Option<&ShmCapture>,
    region: Region,
) -> Result<Frame, DesktopError> {
    let len = region.width as usize * region.height as usize * 4;
    let (x, y) = (to_i16(region.x)?, to_i16(region.y)?);
    let (w, h) = (to_u16(region.width)?, to_u16(region.height)?);
    if let Some(shm) = shm.filter(|_| len <= ShmCapture::MAX_BYTES) {
        conn.shm_get_image(
            root,
            x,
            y,
            w,
            h,
            !0,
            ImageFormat::Z_PIXMAP.into(),
            shm.seg,
            0,
        )?
        .reply()?;
        return Ok(Frame {
            width: region.width,
            height: region.height,
            bgrx: shm.map[..len].to_vec(),
        });
    }
    let reply = conn
        .get_image(ImageFormat::Z_PIXMAP, root, x, y, w, h, !0)?
        .reply()?;
    if reply.data.len() < len {
        return Err(DesktopError::X(format!(
            "GetImage returned {} bytes for a {w}x{h} image",
            reply.data.len()
        )));
    }
    let mut bgrx = reply.data;
    bgrx.truncate(len);
    Ok(Frame {
        width: region.width,
        height: region.height,
        bgrx,
    })
}

fn to_i16(v: u32) -> Result<i16, DesktopError> {
    i16::try_from(v)
        .map_err(|_| DesktopError::field("region", format!("{v} is beyond the X coordinate range")))
}

fn to_u16(v: u32) -> Result<u16, DesktopError> {
    u16::try_from(v)
        .map_err(|_| DesktopError::field("region", format!("{v} is beyond the X size range")))
}
