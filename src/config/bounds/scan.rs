//! The scan behind [`super::MAX_DEPTH`] and [`super::MAX_TOKENS`]: libyaml's tokenizer rules,
//! kept only as far as they decide where tokens start and how deep collections nest. Pure.

/// Which limit a text passes, and the (1-based) line where it does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Excess {
    Depth { line: usize },
    Tokens { line: usize },
}

/// `Ok` if no point of `text` is nested more than `max_depth` collections deep as libyaml
/// scans it, and it has at most `max_tokens` tokens (block collections count as one), else
/// which limit it passes, where. Every parser event comes from at least one token.
///
/// Depth is what libyaml stacks: open flow collections plus open block collections (its
/// indentation stack). It mirrors libyaml's scanner (unsafe-libyaml 0.2, the one under
/// serde_yaml_ng) in what decides where tokens start: comments, quoted, plain and block
/// scalars, anchors, tags, simple keys and indentation. Where libyaml would stop with an error
/// the scan carries on, which can only count more. A single-pair mapping inside a flow
/// sequence (`[a: b]`) and alias replays nest the *tree* deeper without costing libyaml
/// anything; serde_yaml_ng's recursion limit (128) bounds those.
pub fn scan(text: &str, max_depth: usize, max_tokens: usize) -> Result<(), Excess> {
    let mut scan = Scan {
        s: text.as_bytes(),
        i: 0,
        line: 1,
        col: 0,
        chars: 0,
        flow: 0,
        block: Vec::new(),
        keys: vec![None],
        key_allowed: true,
        max_depth,
        tokens: 0,
        max_tokens,
    };
    scan.run()
}

/// A place where a simple (implicit) key may have started, for `key: value` on one line.
#[derive(Clone, Copy)]
struct Key {
    line: usize,
    chars: usize,
    col: usize,
}

struct Scan<'t> {
    s: &'t [u8],
    /// Byte offset.
    i: usize,
    line: usize,
    /// Column and offset in characters, as libyaml counts them.
    col: usize,
    chars: usize,
    flow: usize,
    /// Columns of the open block collections; the last is libyaml's `indent`.
    block: Vec<usize>,
    /// The possible simple key per flow level (index 0: block context).
    keys: Vec<Option<Key>>,
    key_allowed: bool,
    max_depth: usize,
    /// Tokens and block collections so far.
    tokens: usize,
    max_tokens: usize,
}

impl Scan<'_> {
    fn run(&mut self) -> Result<(), Excess> {
        loop {
            self.skip_to_token();
            if self.eof() {
                return Ok(());
            }
            self.count()?;
            self.stale_key();
            self.unroll(self.col);
            let c = self.at(0);
            let blankz1 = self.blankz(1);
            if self.col == 0 && c == b'%' {
                // A directive: its line, comment and all.
                self.unroll_all();
                self.set_key(None);
                self.key_allowed = false;
                self.skip_to_break();
            } else if self.col == 0 && self.document_marker() {
                self.unroll_all();
                self.set_key(None);
                self.key_allowed = false;
                (0..3).for_each(|_| self.skip());
            } else if c == b'[' || c == b'{' {
                self.save_key();
                self.flow += 1;
                self.keys.push(None);
                self.key_allowed = true;
                self.skip();
                self.check_depth()?;
            } else if c == b']' || c == b'}' {
                self.set_key(None);
                if self.flow > 0 {
                    self.flow -= 1;
                    self.keys.pop();
                }
                self.key_allowed = false;
                self.skip();
            } else if c == b',' {
                self.set_key(None);
                self.key_allowed = true;
                self.skip();
            } else if c == b'-' && blankz1 {
                self.roll(self.col)?;
                self.set_key(None);
                self.key_allowed = true;
                self.skip();
            } else if c == b'?' && (self.flow > 0 || blankz1) {
                self.roll(self.col)?;
                self.set_key(None);
                self.key_allowed = self.flow == 0;
                self.skip();
            } else if c == b':' && (self.flow > 0 || blankz1) {
                match self.keys.last().copied().flatten() {
                    Some(key) => {
                        self.roll(key.col)?;
                        self.set_key(None);
                        self.key_allowed = false;
                    }
                    None => {
                        self.roll(self.col)?;
                        self.key_allowed = self.flow == 0;
                    }
                }
                self.skip();
            } else if c == b'*' || c == b'&' {
                self.save_key();
                self.key_allowed = false;
                self.skip();
                while self.at(0).is_ascii_alphanumeric() || matches!(self.at(0), b'_' | b'-') {
                    self.skip();
                }
            } else if c == b'!' {
                self.save_key();
                self.key_allowed = false;
                self.tag();
            } else if (c == b'|' || c == b'>') && self.flow == 0 {
                self.set_key(None);
                self.key_allowed = true;
                self.block_scalar();
            } else if c == b'\'' || c == b'"' {
                self.save_key();
                self.key_allowed = false;
                self.quoted(c);
            } else if self.plain_starts() {
                self.save_key();
                self.key_allowed = false;
                self.plain();
            } else {
                // libyaml: "found character that cannot start any token". Carry on.
                self.skip();
            }
        }
    }

    fn check_depth(&self) -> Result<(), Excess> {
        if self.flow + self.block.len() > self.max_depth {
            Err(Excess::Depth { line: self.line })
        } else {
            Ok(())
        }
    }

    fn count(&mut self) -> Result<(), Excess> {
        self.tokens += 1;
        if self.tokens > self.max_tokens {
            Err(Excess::Tokens { line: self.line })
        } else {
            Ok(())
        }
    }

    /// libyaml's `roll_indent`: a block collection opens at `col` (block context only).
    fn roll(&mut self, col: usize) -> Result<(), Excess> {
        if self.flow == 0 && self.block.last().is_none_or(|&top| top < col) {
            self.block.push(col);
            self.check_depth()?;
            self.count()?;
        }
        Ok(())
    }

    /// libyaml's `unroll_indent`: block collections indented deeper than `col` end.
    fn unroll(&mut self, col: usize) {
        if self.flow == 0 {
            while self.block.last().is_some_and(|&top| top > col) {
                self.block.pop();
            }
        }
    }

    /// libyaml's `unroll_indent(-1)` at a document marker or directive: no effect inside a
    /// flow collection (where libyaml reports an error instead).
    fn unroll_all(&mut self) {
        if self.flow == 0 {
            self.block.clear();
        }
    }

    /// libyaml's `indent`: the column of the innermost block collection, -1 for none.
    fn indent(&self) -> isize {
        self.block.last().map_or(-1, |&c| c as isize)
    }

    fn save_key(&mut self) {
        if self.key_allowed {
            let key = Key {
                line: self.line,
                chars: self.chars,
                col: self.col,
            };
            self.set_key(Some(key));
        }
    }

    fn set_key(&mut self, key: Option<Key>) {
        if let Some(slot) = self.keys.last_mut() {
            *slot = key;
        }
    }

    /// A simple key must end on its line and within 1024 characters.
    fn stale_key(&mut self) {
        if let Some(Some(key)) = self.keys.last() {
            if key.line < self.line || key.chars + 1024 < self.chars {
                self.set_key(None);
            }
        }
    }

    /// libyaml's `scan_skip_to_token`: spaces, tabs where allowed, comments, line breaks.
    fn skip_to_token(&mut self) {
        loop {
            if self.col == 0 && self.s.get(self.i..self.i + 3) == Some(&[0xEF, 0xBB, 0xBF]) {
                self.skip();
            }
            while self.at(0) == b' '
                || (self.at(0) == b'\t' && (self.flow > 0 || !self.key_allowed))
            {
                self.skip();
            }
            if self.at(0) == b'#' {
                self.skip_to_break();
            }
            if self.line_break() == 0 {
                return;
            }
            self.skip_line();
            if self.flow == 0 {
                self.key_allowed = true;
            }
        }
    }

    /// The first character of a plain scalar, by libyaml's test.
    fn plain_starts(&self) -> bool {
        let c = self.at(0);
        !(self.blankz(0) || b"-?:,[]{}#&*!|>'\"%@`".contains(&c))
            || (c == b'-' && !self.blank(1))
            || (self.flow == 0 && (c == b'?' || c == b':') && !self.blankz(1))
    }

    /// libyaml's `scan_plain_scalar`, keeping only where it ends.
    fn plain(&mut self) {
        let indent = self.indent() + 1;
        let mut leading_break = false;
        loop {
            if (self.col == 0 && self.document_marker()) || self.at(0) == b'#' {
                break;
            }
            while !self.blankz(0) {
                let c = self.at(0);
                if (c == b':' && (self.blankz(1) || (self.flow > 0 && self.flow_indicator(1))))
                    || (self.flow > 0 && b",[]{}".contains(&c))
                {
                    break;
                }
                self.skip();
            }
            if !(self.blank(0) || self.line_break() > 0) {
                break;
            }
            while self.blank(0) || self.line_break() > 0 {
                if self.blank(0) {
                    self.skip();
                } else {
                    self.skip_line();
                    leading_break = true;
                }
            }
            if self.flow == 0 && (self.col as isize) < indent {
                break;
            }
        }
        if leading_break {
            self.key_allowed = true;
        }
    }

    /// A single- or double-quoted scalar; may span lines.
    fn quoted(&mut self, quote: u8) {
        self.skip();
        while !self.eof() {
            let c = self.at(0);
            if quote == b'\'' && c == b'\'' && self.at(1) == b'\'' {
                self.skip();
                self.skip();
            } else if c == quote {
                self.skip();
                return;
            } else if quote == b'"' && c == b'\\' {
                self.skip();
                if self.line_break() > 0 {
                    self.skip_line();
                } else if !self.eof() {
                    self.skip();
                }
            } else if self.line_break() > 0 {
                self.skip_line();
            } else {
                self.skip();
            }
        }
    }

    /// `!tag`, `!!tag`, `!handle!suffix` or `!<verbatim>`.
    fn tag(&mut self) {
        self.skip();
        if self.at(0) == b'<' {
            while !self.blankz(0) && self.at(0) != b'>' {
                self.skip();
            }
            if self.at(0) == b'>' {
                self.skip();
            }
            return;
        }
        while self.at(0).is_ascii_alphanumeric() || b"-_;/?:@&=+$.%!~*'()".contains(&self.at(0)) {
            self.skip();
        }
    }

    /// libyaml's `scan_block_scalar`: the header line, then every line indented at least as
    /// far as the content, whose indentation is given or taken from the first non-empty line.
    fn block_scalar(&mut self) {
        self.skip();
        let mut increment = 0;
        for _ in 0..2 {
            match self.at(0) {
                b'+' | b'-' => self.skip(),
                d @ b'1'..=b'9' => {
                    increment = (d - b'0') as isize;
                    self.skip();
                }
                _ => break,
            }
        }
        self.skip_to_break();
        if self.line_break() > 0 {
            self.skip_line();
        }
        let parent = self.indent();
        let mut indent = match increment {
            0 => 0,
            n if parent >= 0 => parent + n,
            n => n,
        };
        let max_indent = self.block_scalar_breaks(indent);
        if indent == 0 {
            indent = max_indent.max(parent + 1).max(1);
        }
        while self.col as isize == indent && !self.eof() {
            self.skip_to_break();
            if self.line_break() > 0 {
                self.skip_line();
            }
            self.block_scalar_breaks(indent);
        }
    }

    /// Indentation and empty lines inside a block scalar; the deepest indentation seen.
    fn block_scalar_breaks(&mut self, indent: isize) -> isize {
        let mut max_indent = 0;
        loop {
            while (indent == 0 || (self.col as isize) < indent) && self.at(0) == b' ' {
                self.skip();
            }
            max_indent = max_indent.max(self.col as isize);
            if self.line_break() == 0 {
                return max_indent;
            }
            self.skip_line();
        }
    }

    fn document_marker(&self) -> bool {
        let three = self.s.get(self.i..self.i + 3);
        (three == Some(b"---") || three == Some(b"...")) && self.blankz(3)
    }

    fn flow_indicator(&self, k: usize) -> bool {
        b",?[]{}".contains(&self.at(k))
    }

    fn eof(&self) -> bool {
        self.i >= self.s.len()
    }

    /// The byte `k` bytes ahead (all the syntax is ASCII), or 0 past the end.
    fn at(&self, k: usize) -> u8 {
        self.s.get(self.i + k).copied().unwrap_or(0)
    }

    fn blank(&self, k: usize) -> bool {
        matches!(self.at(k), b' ' | b'\t')
    }

    fn blankz(&self, k: usize) -> bool {
        self.blank(k) || self.break_len(self.i + k) > 0 || self.i + k >= self.s.len()
    }

    /// The length in bytes of a line break at the cursor, 0 if none.
    fn line_break(&self) -> usize {
        self.break_len(self.i)
    }

    /// libyaml's breaks: CR, LF, CR LF, and NEL, LS, PS.
    fn break_len(&self, i: usize) -> usize {
        match self.s.get(i..).unwrap_or_default() {
            [b'\r', b'\n', ..] => 2,
            [b'\r' | b'\n', ..] => 1,
            [0xC2, 0x85, ..] => 2,
            [0xE2, 0x80, 0xA8 | 0xA9, ..] => 3,
            _ => 0,
        }
    }

    /// Past one character that is not a line break.
    fn skip(&mut self) {
        if let Some(&b) = self.s.get(self.i) {
            self.i += match b {
                0..0x80 => 1,
                0xC0..0xE0 => 2,
                0xE0..0xF0 => 3,
                _ => 4,
            };
            self.col += 1;
            self.chars += 1;
        }
    }

    fn skip_line(&mut self) {
        self.i += self.line_break();
        self.line += 1;
        self.col = 0;
        self.chars += 1;
    }

    fn skip_to_break(&mut self) {
        while !self.eof() && self.line_break() == 0 {
            self.skip();
        }
    }
}
