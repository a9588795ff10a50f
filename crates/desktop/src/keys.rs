//! Key names to X keysyms.
//!
//! Accepts, case-insensitively: nut-js `Key` names (what Bytebot's agent
//! sends: `LeftControl`, `Enter`, `A`, `Num1`), X keysym names (what models
//! often send: `Control_L`, `Return`, `KP_Enter`, `XF86AudioMute`), common
//! short forms (`ctrl`, `cmd`, `esc`, `pgdn`), single characters (`é`, `%`)
//! and xdotool-style combos (`ctrl+shift+t`).

use crate::x11::input::char_keysym;
use bytebot_protocol::ActionError;
use std::collections::HashMap;
use std::sync::OnceLock;

/// A keysym value.
pub type Keysym = u32;

/// nut-js names and short forms, lower-cased, that aren't plain X names.
const ALIASES: &[(&str, Keysym)] = &[
    ("enter", 0xff0d),
    ("return", 0xff0d),
    ("escape", 0xff1b),
    ("esc", 0xff1b),
    ("tab", 0xff09),
    ("space", 0x20),
    ("backspace", 0xff08),
    ("delete", 0xffff),
    ("del", 0xffff),
    ("insert", 0xff63),
    ("ins", 0xff63),
    ("home", 0xff50),
    ("end", 0xff57),
    ("pageup", 0xff55),
    ("pgup", 0xff55),
    ("pagedown", 0xff56),
    ("pgdn", 0xff56),
    ("up", 0xff52),
    ("down", 0xff54),
    ("left", 0xff51),
    ("right", 0xff53),
    ("arrowup", 0xff52),
    ("arrowdown", 0xff54),
    ("arrowleft", 0xff51),
    ("arrowright", 0xff53),
    ("leftcontrol", 0xffe3),
    ("rightcontrol", 0xffe4),
    ("control", 0xffe3),
    ("ctrl", 0xffe3),
    ("lctrl", 0xffe3),
    ("rctrl", 0xffe4),
    ("leftshift", 0xffe1),
    ("rightshift", 0xffe2),
    ("shift", 0xffe1),
    ("leftalt", 0xffe9),
    ("rightalt", 0xffea),
    ("alt", 0xffe9),
    ("option", 0xffe9),
    ("altgr", 0xfe03),
    ("leftsuper", 0xffeb),
    ("rightsuper", 0xffec),
    ("leftcmd", 0xffeb),
    ("rightcmd", 0xffec),
    ("leftwin", 0xffeb),
    ("rightwin", 0xffec),
    ("super", 0xffeb),
    ("cmd", 0xffeb),
    ("command", 0xffeb),
    ("win", 0xffeb),
    ("windows", 0xffeb),
    ("meta", 0xffeb),
    ("print", 0xff61),
    ("printscreen", 0xff61),
    ("capslock", 0xffe5),
    ("scrolllock", 0xff14),
    ("numlock", 0xff7f),
    ("pause", 0xff13),
    ("menu", 0xff67),
    ("minus", 0x2d),
    ("equal", 0x3d),
    ("plus", 0x2b),
    ("leftbracket", 0x5b),
    ("rightbracket", 0x5d),
    ("backslash", 0x5c),
    ("semicolon", 0x3b),
    ("quote", 0x27),
    ("grave", 0x60),
    ("comma", 0x2c),
    ("period", 0x2e),
    ("slash", 0x2f),
    ("add", 0xffab),
    ("subtract", 0xffad),
    ("multiply", 0xffaa),
    ("divide", 0xffaf),
    ("decimal", 0xffae),
    ("clear", 0xff0b),
    ("fn", 0x1008ff2b),
    ("audiomute", 0x1008ff12),
    ("audiovoldown", 0x1008ff11),
    ("audiovolup", 0x1008ff13),
    ("audioplay", 0x1008ff14),
    ("audiostop", 0x1008ff15),
    ("audiopause", 0x1008ff31),
    ("audioprev", 0x1008ff16),
    ("audionext", 0x1008ff17),
    ("audiorewind", 0x1008ff3e),
    ("audioforward", 0x1008ff97),
    ("audiorepeat", 0x1008ff98),
    ("audiorandom", 0x1008ff99),
];

/// X keysym names, both exactly and lower-cased.
struct XNames {
    exact: HashMap<&'static str, Keysym>,
    folded: HashMap<String, Keysym>,
}

fn x_names() -> &'static XNames {
    static NAMES: OnceLock<XNames> = OnceLock::new();
    NAMES.get_or_init(|| {
        let mut exact = HashMap::new();
        let mut folded = HashMap::new();
        // Every named keysym is in the legacy range or the XF86 vendor block.
        for raw in (0..=0xffffu32).chain(0x1008_ff00..=0x1008_ffff) {
            let Some(full) = xkeysym::Keysym::new(raw).name() else {
                continue;
            };
            let name = match full.strip_prefix("XF86XK_") {
                Some(rest) => {
                    // X spells these "XF86AudioMute"; keep both spellings.
                    exact.entry(rest).or_insert(raw);
                    folded
                        .entry(format!("xf86{}", rest.to_lowercase()))
                        .or_insert(raw);
                    rest
                }
                None => full.strip_prefix("XK_").unwrap_or(full),
            };
            exact.entry(name).or_insert(raw);
            // On a case clash ("a" and "A") the lower-case name wins.
            let key = name.to_lowercase();
            if name == key || !folded.contains_key(&key) {
                folded.insert(key, raw);
            }
        }
        XNames { exact, folded }
    })
}

/// Resolves one key name (not a combo) to a keysym.
pub fn keysym_for_name(name: &str) -> Option<Keysym> {
    let mut chars = name.chars();
    if let (Some(ch), None) = (chars.next(), chars.next()) {
        // nut-js letter keys name the key, not the shifted letter.
        return Some(char_keysym(
            ch.to_lowercase()
                .next()
                .filter(|_| ch.is_ascii_alphabetic())
                .unwrap_or(ch),
        ));
    }
    let lower = name.to_lowercase();
    if let Some(&(_, sym)) = ALIASES.iter().find(|(alias, _)| *alias == lower) {
        return Some(sym);
    }
    if let Some(n) = digit_key(&lower) {
        return Some(n);
    }
    if let Some(f) = lower
        .strip_prefix('f')
        .and_then(|n| n.parse::<u32>().ok())
        .filter(|n| (1..=35).contains(n))
    {
        return Some(0xffbd + f);
    }
    let names = x_names();
    names
        .exact
        .get(name)
        .or_else(|| names.folded.get(&lower))
        .copied()
}

/// `num0`..`num9` and `numpad0`..`numpad9`.
fn digit_key(lower: &str) -> Option<Keysym> {
    if let Some(d) = lower.strip_prefix("numpad").and_then(single_digit) {
        return Some(0xffb0 + d);
    }
    lower
        .strip_prefix("num")
        .and_then(single_digit)
        .map(|d| 0x30 + d)
}

fn single_digit(s: &str) -> Option<u32> {
    let mut c = s.chars();
    match (c.next(), c.next()) {
        (Some(d), None) => d.to_digit(10),
        _ => None,
    }
}

/// Splits `ctrl+shift+t` into its keys; a lone `+` (or `ctrl++`) is the plus key.
fn split_combo(name: &str) -> Vec<&str> {
    if name.len() <= 1 || !name.contains('+') {
        return vec![name];
    }
    let mut parts: Vec<&str> = Vec::new();
    let mut rest = name;
    while let Some(i) = rest.find('+') {
        let (head, tail) = rest.split_at(i);
        if head.is_empty() {
            // "++" or a trailing "+": the plus key itself.
            parts.push("+");
            rest = tail.get(2..).unwrap_or("");
            continue;
        }
        parts.push(head);
        rest = &tail[1..];
    }
    if !rest.is_empty() {
        parts.push(rest);
    }
    parts
}

/// Resolves a list of key names, expanding combos, in press order. Errors
/// name the offending entry as `keys[i]` (or `holdKeys[i]` via `field`).
pub fn resolve_keys(field: &str, names: &[String]) -> Result<Vec<Keysym>, ActionError> {
    let mut out = Vec::with_capacity(names.len());
    for (i, name) in names.iter().enumerate() {
        let trimmed = name.trim();
        let trimmed = if trimmed.is_empty() {
            name.as_str()
        } else {
            trimmed
        };
        if trimmed.is_empty() {
            return Err(ActionError::field(
                format!("{field}[{i}]"),
                "is empty; name a key such as \"Enter\"",
            ));
        }
        for part in split_combo(trimmed) {
            match keysym_for_name(part) {
                Some(sym) => out.push(sym),
                None => {
                    return Err(ActionError::field(
                        format!("{field}[{i}]"),
                        format!(
                            "unknown key name \"{part}\"; use nut-js names (LeftControl, Enter, A, Num1, F5), \
                             X keysym names (Control_L, Return, a, KP_Enter) or combos like \"ctrl+shift+t\""
                        ),
                    ));
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(name: &str) -> Keysym {
        keysym_for_name(name).unwrap_or_else(|| panic!("{name} should resolve"))
    }

    #[test]
    fn nutjs_names_resolve_case_insensitively() {
        assert_eq!(one("LeftControl"), 0xffe3);
        assert_eq!(one("leftcontrol"), 0xffe3);
        assert_eq!(one("Enter"), 0xff0d);
        assert_eq!(one("A"), u32::from('a'));
        assert_eq!(one("Num7"), u32::from('7'));
        assert_eq!(one("NumPad3"), 0xffb3);
        assert_eq!(one("F1"), 0xffbe);
        assert_eq!(one("F24"), 0xffd5);
        assert_eq!(one("PageDown"), 0xff56);
        assert_eq!(one("Quote"), u32::from('\''));
        assert_eq!(one("AudioMute"), 0x1008ff12);
        assert_eq!(one("LeftCmd"), 0xffeb);
    }

    #[test]
    fn x_keysym_names_resolve() {
        assert_eq!(one("Return"), 0xff0d);
        assert_eq!(one("KP_Enter"), 0xff8d);
        assert_eq!(one("kp_enter"), 0xff8d);
        assert_eq!(one("Control_L"), 0xffe3);
        assert_eq!(one("XF86AudioMute"), 0x1008ff12);
        assert_eq!(one("xf86audioraisevolume"), 0x1008ff13);
        assert_eq!(one("eacute"), 0xe9);
        assert_eq!(one("Eacute"), 0xc9);
        assert_eq!(one("BackSpace"), 0xff08);
    }

    #[test]
    fn single_characters_resolve_to_their_keysyms() {
        assert_eq!(one("é"), 0xe9);
        assert_eq!(one("%"), u32::from('%'));
        assert_eq!(one("世"), 0x0100_0000 + u32::from('世'));
    }

    #[test]
    fn combos_expand_in_order() {
        let keys = resolve_keys("keys", &["ctrl+shift+t".into()]).unwrap();
        assert_eq!(keys, vec![0xffe3, 0xffe1, u32::from('t')]);
        let keys = resolve_keys("keys", &["ctrl++".into(), "+".into()]).unwrap();
        assert_eq!(keys, vec![0xffe3, u32::from('+'), u32::from('+')]);
        let keys = resolve_keys("keys", &["Super+L".into()]).unwrap();
        assert_eq!(keys, vec![0xffeb, u32::from('l')]);
    }

    #[test]
    fn unknown_names_are_named_with_their_position() {
        let e = resolve_keys("holdKeys", &["ctrl".into(), "hyperdrive".into()]).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("holdKeys[1]"));
        assert!(e.message.contains("\"hyperdrive\""), "{e}");
        let e = resolve_keys("keys", &["ctrl+bogus".into()]).unwrap_err();
        assert!(e.message.contains("\"bogus\""), "{e}");
        let e = resolve_keys("keys", &[String::new()]).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("keys[0]"));
    }
}
