//! The pointer image through XFixes, blended into captures on request: X
//! screen captures never include the cursor, but a model often needs to see it.

use super::XSession;
use super::capture::{Frame, Region};
use crate::error::DesktopError;
use x11rb::protocol::xfixes::ConnectionExt as _;

impl XSession {
    /// Draws the current cursor into `frame`, which shows `region` of the screen.
    pub fn draw_cursor(&self, frame: &mut Frame, region: Region) -> Result<(), DesktopError> {
        if !self.has_xfixes {
            return Err(DesktopError::Failed(
                "the X server lacks the XFixes extension, so the cursor cannot be drawn; ask without cursor=true".into(),
            ));
        }
        let img = self.conn.xfixes_get_cursor_image()?.reply()?;
        let left = i64::from(img.x) - i64::from(img.xhot) - i64::from(region.x);
        let top = i64::from(img.y) - i64::from(img.yhot) - i64::from(region.y);
        for cy in 0..i64::from(img.height) {
            for cx in 0..i64::from(img.width) {
                let (fx, fy) = (left + cx, top + cy);
                if fx < 0 || fy < 0 || fx >= i64::from(frame.width) || fy >= i64::from(frame.height)
                {
                    continue;
                }
                let Some(&argb) = img
                    .cursor_image
                    .get((cy * i64::from(img.width) + cx) as usize)
                else {
                    continue;
                };
                blend(frame, fx as usize, fy as usize, argb);
            }
        }
        Ok(())
    }
}

/// Blends one premultiplied ARGB pixel over a BGRX pixel.
fn blend(frame: &mut Frame, x: usize, y: usize, argb: u32) {
    let alpha = argb >> 24;
    if alpha == 0 {
        return;
    }
    let i = (y * frame.width as usize + x) * 4;
    let inv = 255 - alpha;
    for (channel, shift) in [(0, 0), (1, 8), (2, 16)] {
        let src = (argb >> shift) & 0xff;
        let dst = u32::from(frame.bgrx[i + channel]);
        frame.bgrx[i + channel] = (src + dst * inv / 255).min(255) as u8;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blending_is_premultiplied_over() {
        let mut f = Frame {
            width: 1,
            height: 1,
            bgrx: vec![100, 100, 100, 0],
        };
        blend(&mut f, 0, 0, 0xff00_00ff); // opaque blue
        assert_eq!(&f.bgrx[..3], &[255, 0, 0]);
        let mut f = Frame {
            width: 1,
            height: 1,
            bgrx: vec![200, 200, 200, 0],
        };
        blend(&mut f, 0, 0, 0x0000_0000); // transparent
        assert_eq!(&f.bgrx[..3], &[200, 200, 200]);
    }
}
