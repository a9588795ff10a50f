//! The server's keyboard mapping, as we need it for typing: which keycode
//! (and whether Shift) produces a keysym, and which keycodes are free to be
//! remapped for characters the layout lacks.

use crate::error::DesktopError;
use std::collections::HashMap;
use x11rb::connection::Connection;
use x11rb::protocol::xproto::{ConnectionExt as _, Keycode, Keysym};

/// Where a keysym lives on the keyboard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyPos {
    /// The keycode to press.
    pub keycode: Keycode,
    /// Whether Shift must be held to get the keysym.
    pub shift: bool,
}

/// A snapshot of the keyboard mapping plus our spare-keycode bookkeeping.
pub struct Keymap {
    min: Keycode,
    per_code: u8,
    /// keysyms[(code - min) * per_code + level]
    syms: Vec<Keysym>,
    index: HashMap<Keysym, KeyPos>,
    /// Keycodes with no keysym at all, which we may remap; in rotation order.
    spare: Vec<Keycode>,
    /// Next spare to hand out.
    next_spare: usize,
}

impl Keymap {
    /// Reads the whole mapping from the server.
    pub fn load(conn: &impl Connection) -> Result<Self, DesktopError> {
        let setup = conn.setup();
        let (min, max) = (setup.min_keycode, setup.max_keycode);
        let reply = conn.get_keyboard_mapping(min, max - min + 1)?.reply()?;
        let per_code = reply.keysyms_per_keycode;
        let mut map = Self {
            min,
            per_code,
            syms: reply.keysyms,
            index: HashMap::new(),
            spare: Vec::new(),
            next_spare: 0,
        };
        map.reindex();
        Ok(map)
    }

    fn reindex(&mut self) {
        self.index.clear();
        self.spare.clear();
        let per = usize::from(self.per_code.max(1));
        // Levels 0 and 1 are plain and Shift; higher levels need AltGr or
        // mode switch, which we don't chase: such keysyms get a spare keycode.
        // Level 0 everywhere first, so a keysym some key gives without Shift
        // (`less` on the <> key) is never typed with it.
        for level in 0..per.min(2) {
            for (i, chunk) in self.syms.chunks(per).enumerate() {
                let Ok(offset) = u8::try_from(i) else { break };
                let keycode = self.min.saturating_add(offset);
                if chunk.iter().all(|&s| s == 0) {
                    if level == 0 {
                        self.spare.push(keycode);
                    }
                    continue;
                }
                if let Some(&sym) = chunk.get(level).filter(|&&s| s != 0) {
                    self.index.entry(sym).or_insert(KeyPos {
                        keycode,
                        shift: level == 1,
                    });
                }
            }
        }
    }

    /// Where `keysym` is on the current layout, if anywhere reachable.
    pub fn find(&self, keysym: Keysym) -> Option<KeyPos> {
        self.index.get(&keysym).copied()
    }

    /// The keysym a keycode gives at level 0, for reporting observed input.
    pub fn keysym_of(&self, keycode: Keycode, shift: bool) -> Keysym {
        let per = usize::from(self.per_code);
        let base = usize::from(keycode.saturating_sub(self.min)) * per;
        let level = usize::from(shift && per > 1);
        self.syms.get(base + level).copied().unwrap_or(0)
    }

    /// How many keycodes are free for remapping.
    pub fn spare_count(&self) -> usize {
        self.spare.len()
    }

    /// Maps `keysym` onto the next spare keycode (both levels, so Shift does
    /// not matter) and returns it; `None` when the layout has no spare keycode.
    pub fn remap_spare(
        &mut self,
        conn: &impl Connection,
        keysym: Keysym,
    ) -> Result<Option<Keycode>, DesktopError> {
        if self.spare.is_empty() {
            return Ok(None);
        }
        let keycode = self.spare[self.next_spare % self.spare.len()];
        self.next_spare = (self.next_spare + 1) % self.spare.len();
        let per = usize::from(self.per_code.max(1));
        let syms = vec![keysym; per];
        conn.change_keyboard_mapping(1, keycode, self.per_code, &syms)?;
        // Forget whatever keysym this spare carried before.
        let base = usize::from(keycode - self.min) * per;
        for slot in &mut self.syms[base..base + per] {
            let old = *slot;
            if old != 0 && self.index.get(&old).map(|p| p.keycode) == Some(keycode) {
                self.index.remove(&old);
            }
            *slot = keysym;
        }
        self.index.insert(
            keysym,
            KeyPos {
                keycode,
                shift: false,
            },
        );
        Ok(Some(keycode))
    }

    /// Whether `keycode` is one of the spares we remap.
    pub fn is_spare(&self, keycode: Keycode) -> bool {
        self.spare.contains(&keycode)
    }

    /// Puts every spare keycode back to NoSymbol (on shutdown).
    pub fn restore_spares(&mut self, conn: &impl Connection) -> Result<(), DesktopError> {
        let per = usize::from(self.per_code.max(1));
        let zeros = vec![0; per];
        for &keycode in &self.spare {
            conn.change_keyboard_mapping(1, keycode, self.per_code, &zeros)?;
            let base = usize::from(keycode - self.min) * per;
            self.syms[base..base + per].fill(0);
        }
        let spare = std::mem::take(&mut self.spare);
        self.reindex();
        self.spare = spare;
        Ok(())
    }
}
