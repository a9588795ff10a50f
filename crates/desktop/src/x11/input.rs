//! Synthetic input through XTEST: each event is one request on our socket,
//! no helper process and no artificial delay.

use super::XSession;
use super::keymap::KeyPos;
use crate::error::DesktopError;
use bytebot_protocol::{Button, ScrollDirection};
use std::time::Duration;
use x11rb::connection::Connection;
use x11rb::protocol::xproto::{
    BUTTON_PRESS_EVENT, BUTTON_RELEASE_EVENT, ConnectionExt as _, KEY_PRESS_EVENT,
    KEY_RELEASE_EVENT, KeyButMask, Keysym, MOTION_NOTIFY_EVENT,
};
use x11rb::protocol::xtest::ConnectionExt as _;

/// Keysym of the left Shift key.
const SHIFT_L: Keysym = 0xffe1;
/// Keysym of Return, typed for a newline.
const RETURN: Keysym = 0xff0d;
/// Keysym of Tab.
const TAB: Keysym = 0xff09;

/// How long to let clients catch up before a spare keycode is remapped a
/// second time within one text: they read the new mapping lazily, so a key
/// event still queued would otherwise be read with the newer mapping. 25 ms
/// was too short for a client on a loaded machine (2 cores, tests in
/// parallel); the pause is paid only once per full round of spares.
const SPARE_REUSE_PAUSE: Duration = Duration::from_millis(75);

/// X button number for a [`Button`].
pub fn button_number(button: Button) -> u8 {
    match button {
        Button::Left => 1,
        Button::Middle => 2,
        Button::Right => 3,
    }
}

/// X button number for a wheel notch.
pub fn scroll_button(direction: ScrollDirection) -> u8 {
    match direction {
        ScrollDirection::Up => 4,
        ScrollDirection::Down => 5,
        ScrollDirection::Left => 6,
        ScrollDirection::Right => 7,
    }
}

impl XSession {
    /// Moves the pointer to an absolute position.
    pub fn move_to(&self, x: i16, y: i16) -> Result<(), DesktopError> {
        self.conn
            .xtest_fake_input(MOTION_NOTIFY_EVENT, 0, 0, self.root, x, y, 0)?;
        Ok(())
    }

    /// Presses or releases a mouse button (by X number) where the pointer is.
    pub fn button(&self, number: u8, down: bool) -> Result<(), DesktopError> {
        let kind = if down {
            BUTTON_PRESS_EVENT
        } else {
            BUTTON_RELEASE_EVENT
        };
        self.conn
            .xtest_fake_input(kind, number, 0, self.root, 0, 0, 0)?;
        Ok(())
    }

    /// Presses or releases a keycode.
    pub fn keycode(&self, keycode: u8, down: bool) -> Result<(), DesktopError> {
        let kind = if down {
            KEY_PRESS_EVENT
        } else {
            KEY_RELEASE_EVENT
        };
        self.conn
            .xtest_fake_input(kind, keycode, 0, self.root, 0, 0, 0)?;
        Ok(())
    }

    /// Finds the key for `keysym`, remapping a spare keycode when the layout
    /// lacks it. `used` collects spares remapped during the current action so
    /// a second remap of one of them waits for clients to catch up first.
    pub fn key_for(&mut self, keysym: Keysym, used: &mut Vec<u8>) -> Result<KeyPos, DesktopError> {
        if let Some(pos) = self.keymap.find(keysym) {
            return Ok(pos);
        }
        if self.keymap.spare_count() <= used.len() {
            // Every spare already carries a character of this text.
            self.conn.flush()?;
            self.sync()?;
            std::thread::sleep(SPARE_REUSE_PAUSE);
            used.clear();
        }
        match self.keymap.remap_spare(&self.conn, keysym)? {
            Some(keycode) => {
                used.push(keycode);
                Ok(KeyPos {
                    keycode,
                    shift: false,
                })
            }
            None => Err(DesktopError::Failed(format!(
                "keysym 0x{keysym:x} is not on the keyboard layout and no spare keycode is free to map it"
            ))),
        }
    }

    /// Presses or releases the key that produces `keysym`, with Shift held
    /// from its press to its release when the keysym sits on the shifted
    /// level (`percent`, `colon`, `plus`) and Shift isn't down already.
    /// Keysyms only reachable on higher levels got a spare keycode in
    /// [`key_for`](Self::key_for), which needs no modifier.
    pub fn keysym(
        &mut self,
        keysym: Keysym,
        down: bool,
        used: &mut Vec<u8>,
    ) -> Result<(), DesktopError> {
        let pos = self.key_for(keysym, used)?;
        if !down {
            self.keycode(pos.keycode, false)?;
            if let Some(i) = self.auto_shift.iter().position(|&k| k == pos.keycode) {
                self.auto_shift.swap_remove(i);
                if self.auto_shift.is_empty() {
                    self.press_shift(false, used)?;
                }
            }
            return Ok(());
        }
        if keysym == SHIFT_L && !self.auto_shift.is_empty() {
            // The caller's own Shift_L after a key we shifted (`percent+shift`):
            // it is down already; from now on it is theirs to release.
            self.auto_shift.clear();
            return Ok(());
        }
        if pos.shift {
            if !self.auto_shift.is_empty() || !self.shift_is_down()? {
                if self.auto_shift.is_empty() {
                    self.press_shift(true, used)?;
                }
                self.auto_shift.push(pos.keycode);
            }
        } else if !self.auto_shift.is_empty() && !is_modifier(keysym) {
            // A plain key after a shifted one in one chord (`exclam+a`): let
            // go of our Shift so it types its own level.
            self.press_shift(false, used)?;
            self.auto_shift.clear();
        }
        self.keycode(pos.keycode, true)
    }

    /// Presses or releases Shift_L for a shifted keysym.
    fn press_shift(&mut self, down: bool, used: &mut Vec<u8>) -> Result<(), DesktopError> {
        let shift = self.key_for(SHIFT_L, used)?;
        self.keycode(shift.keycode, down)
    }

    /// Whether Shift is in effect now (held by the caller or a person), as
    /// the server sees it after every event we sent so far.
    fn shift_is_down(&self) -> Result<bool, DesktopError> {
        let pointer = self.conn.query_pointer(self.root)?.reply()?;
        Ok(u16::from(pointer.mask) & u16::from(KeyButMask::SHIFT) != 0)
    }

    /// Types one character: its key, with Shift around it when needed.
    pub fn type_char(&mut self, ch: char, used: &mut Vec<u8>) -> Result<(), DesktopError> {
        let keysym = char_keysym(ch);
        // A layout may carry the legacy keysym (Greek_OMEGA); when it doesn't,
        // remap the Unicode keysym, which every client decodes the same way.
        let keysym = match self.keymap.find(keysym) {
            None if u32::from(ch) >= 0x100 => 0x0100_0000 + u32::from(ch),
            _ => keysym,
        };
        let pos = self.key_for(keysym, used)?;
        let shift = if pos.shift {
            Some(self.key_for(SHIFT_L, used)?)
        } else {
            None
        };
        if let Some(s) = shift {
            self.keycode(s.keycode, true)?;
        }
        self.keycode(pos.keycode, true)?;
        self.keycode(pos.keycode, false)?;
        if let Some(s) = shift {
            self.keycode(s.keycode, false)?;
        }
        Ok(())
    }

    /// Types `text` character by character, pausing `delay` between them.
    pub fn type_text(&mut self, text: &str, delay: Duration) -> Result<(), DesktopError> {
        let mut used = Vec::new();
        for ch in text.chars() {
            if ch == '\r' {
                continue;
            }
            self.type_char(ch, &mut used)?;
            if !delay.is_zero() {
                self.conn.flush()?;
                std::thread::sleep(delay);
            }
        }
        Ok(())
    }
}

/// Whether `keysym` is a modifier key (Shift, Control, Alt, Super, level
/// shifts), which may be pressed while our Shift is held without ending it.
fn is_modifier(keysym: Keysym) -> bool {
    (0xffe1..=0xffee).contains(&keysym) || (0xfe01..=0xfe13).contains(&keysym)
}

/// The keysym X uses for a character: Latin-1 keysyms are the code point,
/// others are Unicode keysyms (0x0100_0000 + code point); control characters
/// map to their keys.
pub fn char_keysym(ch: char) -> Keysym {
    match ch {
        '\n' => RETURN,
        '\t' => TAB,
        '\u{8}' => 0xff08,
        '\u{1b}' => 0xff1b,
        _ => xkeysym::Keysym::from_char(ch).raw(),
    }
}
