//! Where things are in the policy text.
//!
//! serde_json reports a line and column for the errors it finds, but the checks
//! made after parsing (a bad glob, an unknown intent) only know the JSON path of
//! the offending value. This small scanner records the byte span of every value
//! by its path, so those errors can name a line and column too, and so a path
//! can be put on serde's errors. It also notices duplicate keys, which serde
//! silently merges in maps. It tolerates broken text: it stops at the first
//! thing it does not understand and keeps what it saw before.

use std::collections::HashSet;

/// How deep the scanner follows nesting; serde_json stops at 128 too.
const MAX_DEPTH: usize = 128;

/// The spans of the values in one JSON text.
pub(super) struct Index {
    entries: Vec<Entry>,
    duplicate: Option<(String, usize)>,
}

/// One value: its path, where its key (or the value) begins, where the value
/// begins, and its last byte (unknown if the text broke off inside it).
struct Entry {
    path: String,
    begin: usize,
    value: usize,
    end: Option<usize>,
}

impl Index {
    /// Scans `text`.
    pub(super) fn scan(text: &str) -> Index {
        let mut scanner = Scanner {
            text,
            pos: 0,
            entries: Vec::new(),
            duplicate: None,
        };
        // A `None` only means the text stopped making sense; what was seen stays.
        let _ = scanner.value(String::new(), None, 0);
        Index {
            entries: scanner.entries,
            duplicate: scanner.duplicate,
        }
    }

    /// The byte offset of the value at `path`, or of its nearest ancestor that
    /// is in the text (a defaulted field is not), or 0.
    pub(super) fn offset_of(&self, path: &str) -> usize {
        let mut path = path;
        loop {
            if let Some(offset) = self.find(path) {
                return offset;
            }
            match parent(path) {
                Some(up) => path = up,
                None => return 0,
            }
        }
    }

    /// The byte offset of the value at exactly `path`, if it is in the text.
    pub(super) fn find(&self, path: &str) -> Option<usize> {
        self.entries
            .iter()
            .find(|e| e.path == path)
            .map(|e| e.value)
    }

    /// The path of the innermost value (with its key) that contains `offset`.
    pub(super) fn path_at(&self, offset: usize) -> &str {
        self.entries
            .iter()
            .filter(|e| e.begin <= offset && e.end.is_none_or(|end| offset <= end))
            .max_by_key(|e| e.begin)
            .map_or("", |e| e.path.as_str())
    }

    /// The first key that appears twice in one object: its path and the byte
    /// offset of its second appearance.
    pub(super) fn duplicate(&self) -> Option<(&str, usize)> {
        self.duplicate.as_ref().map(|(p, o)| (p.as_str(), *o))
    }
}

/// The path one level up: `a.b[2]` → `a.b`, `a.b` → `a`, `a` → `` (the root).
fn parent(path: &str) -> Option<&str> {
    if path.is_empty() {
        return None;
    }
    if path.ends_with(']')
        && let Some(i) = path.rfind('[')
    {
        return Some(&path[..i]);
    }
    Some(path.rfind('.').map_or("", |i| &path[..i]))
}

/// Joins an object key onto a path.
fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

struct Scanner<'a> {
    text: &'a str,
    pos: usize,
    entries: Vec<Entry>,
    duplicate: Option<(String, usize)>,
}

impl<'a> Scanner<'a> {
    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
    }

    /// Expects `byte` (after whitespace) and steps over it.
    fn eat(&mut self, byte: u8) -> Option<()> {
        self.skip_ws();
        (self.peek()? == byte).then(|| self.pos += 1)
    }

    fn value(&mut self, path: String, key_start: Option<usize>, depth: usize) -> Option<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        self.skip_ws();
        let start = self.pos;
        let index = self.entries.len();
        self.entries.push(Entry {
            path,
            begin: key_start.unwrap_or(start),
            value: start,
            end: None,
        });
        match self.peek()? {
            b'{' => self.object(index, depth)?,
            b'[' => self.array(index, depth)?,
            b'"' => {
                self.string()?;
            }
            _ => self.scalar()?,
        }
        self.entries[index].end = Some(self.pos - 1);
        Some(())
    }

    fn object(&mut self, index: usize, depth: usize) -> Option<()> {
        self.pos += 1;
        self.skip_ws();
        if self.peek()? == b'}' {
            self.pos += 1;
            return Some(());
        }
        let mut seen = HashSet::new();
        loop {
            self.skip_ws();
            let key_start = self.pos;
            if self.peek()? != b'"' {
                return None;
            }
            let raw = self.string()?;
            let key: String = serde_json::from_str(raw).ok()?;
            let child = join(&self.entries[index].path, &key);
            if !seen.insert(key) && self.duplicate.is_none() {
                self.duplicate = Some((child.clone(), key_start));
            }
            self.eat(b':')?;
            self.value(child, Some(key_start), depth + 1)?;
            self.skip_ws();
            match self.peek()? {
                b',' => self.pos += 1,
                b'}' => {
                    self.pos += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    fn array(&mut self, index: usize, depth: usize) -> Option<()> {
        self.pos += 1;
        self.skip_ws();
        if self.peek()? == b']' {
            self.pos += 1;
            return Some(());
        }
        for i in 0.. {
            let child = format!("{}[{i}]", self.entries[index].path);
            self.value(child, None, depth + 1)?;
            self.skip_ws();
            match self.peek()? {
                b',' => self.pos += 1,
                b']' => {
                    self.pos += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
        None
    }

    /// Steps over a string and returns it with its quotes.
    fn string(&mut self) -> Option<&'a str> {
        let start = self.pos;
        self.pos += 1;
        loop {
            match self.peek()? {
                b'"' => {
                    self.pos += 1;
                    // Both ends are ASCII quotes, so both are char boundaries.
                    return self.text.get(start..self.pos);
                }
                b'\\' => self.pos += 2,
                _ => self.pos += 1,
            }
        }
    }

    /// Steps over a number, `true`, `false` or `null`.
    fn scalar(&mut self) -> Option<()> {
        let start = self.pos;
        while let Some(b) = self.peek() {
            if matches!(b, b',' | b']' | b'}' | b' ' | b'\t' | b'\n' | b'\r') {
                break;
            }
            self.pos += 1;
        }
        (self.pos > start).then_some(())
    }
}
