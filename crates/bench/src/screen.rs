//! A synthetic but realistic desktop to measure on: flat panels, window-like
//! boxes and lines of text in a legible core font, the same in every run.

use anyhow::{Context, Result};
use x11rb::connection::Connection;
use x11rb::protocol::xproto::{
    ChangeGCAux, ConnectionExt as _, CreateGCAux, CreateWindowAux, EventMask, Gcontext, Rectangle,
    Window, WindowClass,
};
use x11rb::rust_connection::RustConnection;

/// A full-screen window we paint on.
pub struct Painter {
    conn: RustConnection,
    window: Window,
    gc: Gcontext,
}

const LINES: &[&str] = &[
    "File  Edit  View  Search  Terminal  Help",
    "user@bytebot:~/projects/report$ cargo build --release",
    "   Compiling report v0.3.1 (/home/user/projects/report)",
    "    Finished release profile [optimized] target(s) in 12.84s",
    "Quarterly summary: revenue up 12 percent, costs down 3 percent",
    "Save As...   Open Recent   Print Preview   Settings",
];

impl Painter {
    /// Opens a connection and an override-redirect window covering the screen.
    pub fn open(display: &str) -> Result<Self> {
        let (conn, n) =
            RustConnection::connect(Some(display)).context("connecting to the bench display")?;
        let screen = &conn.setup().roots[n];
        let (root, w, h) = (screen.root, screen.width_in_pixels, screen.height_in_pixels);
        let window = conn.generate_id()?;
        conn.create_window(
            0,
            window,
            root,
            0,
            0,
            w,
            h,
            0,
            WindowClass::INPUT_OUTPUT,
            0,
            &CreateWindowAux::new()
                .background_pixel(0x2e3440)
                .override_redirect(1)
                .event_mask(EventMask::EXPOSURE),
        )?;
        let font = conn.generate_id()?;
        // 10x20 is in xfonts-base; "fixed" is always there.
        if conn.open_font(font, b"10x20")?.check().is_err() {
            conn.open_font(font, b"fixed")?.check()?;
        }
        let gc = conn.generate_id()?;
        conn.create_gc(
            gc,
            window,
            &CreateGCAux::new()
                .font(font)
                .foreground(0xeceff4)
                .background(0x2e3440),
        )?;
        conn.map_window(window)?;
        conn.get_input_focus()?.reply()?;
        Ok(Self { conn, window, gc })
    }

    fn fill(&self, color: u32, x: i16, y: i16, w: u16, h: u16) -> Result<()> {
        self.conn
            .change_gc(self.gc, &ChangeGCAux::new().foreground(color))?;
        self.conn.poly_fill_rectangle(
            self.window,
            self.gc,
            &[Rectangle {
                x,
                y,
                width: w,
                height: h,
            }],
        )?;
        Ok(())
    }

    /// Paints panels, windows and text.
    pub fn paint_desktop(&self) -> Result<()> {
        self.fill(0x3b4252, 0, 0, 1280, 28)?;
        let mut seed = 0x1234_5678u32;
        for i in 0..14 {
            seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
            let (x, y) = ((seed >> 8) % 900, 40 + (seed >> 20) % 600);
            let color = 0x404040 + (seed & 0x3f3f3f);
            self.fill(
                color,
                x as i16,
                y as i16,
                300 + (i * 13) as u16,
                200 + (i * 7) as u16,
            )?;
        }
        self.fill(0xffffff, 60, 500, 900, 260)?;
        self.conn.change_gc(
            self.gc,
            &ChangeGCAux::new().foreground(0x000000).background(0xffffff),
        )?;
        for (i, line) in LINES.iter().enumerate() {
            self.conn.image_text8(
                self.window,
                self.gc,
                80,
                540 + 36 * i as i16,
                line.as_bytes(),
            )?;
        }
        self.conn.change_gc(
            self.gc,
            &ChangeGCAux::new().foreground(0xeceff4).background(0x3b4252),
        )?;
        self.conn.image_text8(
            self.window,
            self.gc,
            12,
            20,
            b"Activities   Terminal   Files   Firefox",
        )?;
        self.conn.get_input_focus()?.reply()?;
        Ok(())
    }

    /// Changes two small squares (one inside the benchmark's OCR region, one
    /// in the far corner), so content caches see a new screen.
    pub fn mark(&self, k: u32) -> Result<()> {
        let color = k.wrapping_mul(0x0010_2030) & 0xffffff;
        self.fill(color, 620, 220, 10, 10)?;
        self.fill(color, 1270, 950, 10, 10)?;
        self.conn.get_input_focus()?.reply()?;
        Ok(())
    }
}
