//! Screen ↔ model-image coordinates.
//!
//! A model sees the screen scaled down (keeping the aspect ratio) to fit its image limit; its
//! coordinates are in the image's pixels. [`Scale`] maps them back to the screen exactly the
//! way the desktop scaled the picture, and maps screen points into image space when old calls
//! are shown to a model with a different limit (a fallback mid-task).

use crate::model::{ComputerAction, ImageLimit, Point};

/// The image size a model gets for a screen: the largest size with the screen's aspect ratio
/// whose long edge and pixel count fit `limit` (never larger than the screen).
pub fn fit(screen: (u32, u32), limit: ImageLimit) -> (u32, u32) {
    let (w, h) = (f64::from(screen.0.max(1)), f64::from(screen.1.max(1)));
    let by_edge = f64::from(limit.max_long_edge) / w.max(h);
    let by_pixels = (limit.max_pixels as f64 / (w * h)).sqrt();
    let factor = by_edge.min(by_pixels).min(1.0);
    // Rounded down so both limits hold after rounding.
    let width = ((w * factor).floor() as u32).max(1);
    let height = ((h * factor).floor() as u32).max(1);
    (width, height)
}

/// The mapping between one screen size and one image size.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scale {
    /// Screen size.
    pub screen: (u32, u32),
    /// Image size.
    pub image: (u32, u32),
}

impl Scale {
    /// A point in image space → the screen (rounded, clamped onto the screen).
    pub fn to_screen(&self, p: Point) -> Point {
        Point {
            x: map(p.x, self.image.0, self.screen.0),
            y: map(p.y, self.image.1, self.screen.1),
        }
    }

    /// A point on the screen → image space (rounded, clamped onto the image).
    pub fn to_image(&self, p: Point) -> Point {
        Point {
            x: map(p.x, self.screen.0, self.image.0),
            y: map(p.y, self.screen.1, self.image.1),
        }
    }

    /// Every point of an action mapped with `f`.
    pub fn map_action(action: &ComputerAction, f: impl Fn(Point) -> Point) -> ComputerAction {
        let mut a = action.clone();
        match &mut a {
            ComputerAction::Click { at, .. } | ComputerAction::Move { at } => *at = f(*at),
            ComputerAction::MouseDown { at, .. }
            | ComputerAction::MouseUp { at, .. }
            | ComputerAction::Scroll { at, .. } => {
                if let Some(p) = at {
                    *p = f(*p);
                }
            }
            ComputerAction::Drag { path, .. } => {
                for p in path {
                    *p = f(*p);
                }
            }
            ComputerAction::Zoom { from, to } => {
                *from = f(*from);
                *to = f(*to);
            }
            ComputerAction::Screenshot
            | ComputerAction::Type { .. }
            | ComputerAction::Key { .. }
            | ComputerAction::HoldKey { .. }
            | ComputerAction::Wait { .. }
            | ComputerAction::CursorPosition
            | ComputerAction::Navigate { .. } => {}
        }
        a
    }
}

/// `v` of a `from`-pixel axis onto a `to`-pixel axis, by pixel centres: pixel `v` covers
/// `[v, v+1)`, so its centre `v + 0.5` scales, and the result's pixel is the one containing
/// the scaled centre. Clamped onto `0..to`.
fn map(v: i32, from: u32, to: u32) -> i32 {
    if from == 0 || to == 0 {
        return 0;
    }
    let scaled = (f64::from(v) + 0.5) * f64::from(to) / f64::from(from);
    (scaled.floor() as i64).clamp(0, i64::from(to) - 1) as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLAUDE: ImageLimit = ImageLimit {
        max_long_edge: 1568,
        max_pixels: 1_150_000,
    };

    #[test]
    fn a_screen_that_fits_is_not_scaled() {
        assert_eq!(fit((1024, 768), CLAUDE), (1024, 768));
    }

    #[test]
    fn a_large_screen_keeps_its_aspect_ratio_within_both_limits() {
        let (w, h) = fit((2560, 1440), CLAUDE);
        assert!(w <= 1568 && u64::from(w) * u64::from(h) <= 1_150_000);
        let ratio = f64::from(w) / f64::from(h);
        assert!((ratio - 16.0 / 9.0).abs() < 0.01, "{w}x{h}");
    }

    #[test]
    fn points_map_back_to_the_same_spot() {
        let s = Scale {
            screen: (1280, 960),
            image: (1024, 768),
        };
        assert_eq!(
            s.to_screen(Point { x: 512, y: 384 }),
            Point { x: 640, y: 480 }
        );
        assert_eq!(s.to_screen(Point { x: 0, y: 0 }), Point { x: 0, y: 0 });
        assert_eq!(
            s.to_screen(Point { x: 1023, y: 767 }),
            Point { x: 1279, y: 959 }
        );
        // Out of the image: clamped onto the screen, never off it.
        assert_eq!(
            s.to_screen(Point { x: 5000, y: -3 }),
            Point { x: 1279, y: 0 }
        );
        for x in 0..1024 {
            let p = Point { x, y: 10 };
            assert_eq!(s.to_image(s.to_screen(p)), p, "round trip of {x}");
        }
    }
}
