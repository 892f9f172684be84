//! YAML text with the bytes Helm's `toYaml` gives.
//!
//! Helm's `toYaml` is `sigs.k8s.io/yaml`'s `Marshal`: the value goes through
//! JSON, is read back by go-yaml v2 and written by go-yaml v2's emitter
//! (a port of libyaml's). Charts put that text inside ConfigMap values (the
//! Argo CD notifications `context` and `subscriptions`, CMP plugin specs), so
//! a rendering only matches Helm's byte for byte if the text does. What that
//! pipeline does, and this module does the same way:
//!
//! - **Numbers.** Integral numbers that fit 64 bits are written as integers
//!   (JSON drops the `.0`); other numbers as Go's shortest `%g` (`0.5`,
//!   `1.2345675e+06`, `1e-05`, `1e+21`).
//! - **Key order.** Keys are sorted the go-yaml v2 way: runs of digits compare
//!   as numbers (`a9` before `a10`), a non-letter sorts before a letter, other
//!   characters by code point.
//! - **String styles.** A string with a line break is a literal block
//!   (`|`, `|-`, `|+`, `|2-` for a leading space); one that would read back as
//!   another YAML 1.1 type (`"true"`, `"yes"`, `"1_000"`, `"0x1F"`, `"1e3"`,
//!   `"12:30"`, `"2026-01-02"`, `""`, `"~"`) is double-quoted; one that cannot
//!   be plain (starts with an indicator such as `*`, `@`, `%`, `[`, or holds
//!   `": "` or `" #"`, or has a leading or trailing space) is single-quoted;
//!   a tab, a control character, a character outside the Basic Multilingual
//!   Plane or a space before a line break makes it double-quoted, with
//!   escapes (`\t`, `\U0001F600`).
//! - **Line folding.** Plain, single- and double-quoted strings are folded at
//!   a space once the line passes 80 columns (the continuation indented under
//!   the key); literal blocks never are.
//! - **Layout.** Two-space indentation, a list under a key not indented,
//!   `{}` / `[]` for empty collections, and a key longer than 128 bytes or
//!   with a line break written as a complex key (`? key`).
//!
//! Known limits: a key's non-ASCII digits sort as other characters do, and a
//! float whose shortest digits are a tie Go and Rust break differently can
//! differ in its last digit.

use std::borrow::Cow;
use std::cmp::Ordering;

use tera::Value;

/// Columns after which go-yaml folds a line at a space.
const BEST_WIDTH: usize = 80;
/// A key longer than this (in bytes) is written as a complex key.
const MAX_SIMPLE_KEY: usize = 128;

/// A value that `toYaml` cannot write: one Helm's JSON step refuses.
#[derive(Debug, thiserror::Error)]
#[error("to_yaml: {0}")]
pub(crate) struct HelmYamlError(String);

/// `v` as Helm's `toYaml` writes it, without the trailing newline.
pub(crate) fn to_helm_yaml(v: &Value) -> Result<String, HelmYamlError> {
    let mut w = Writer::new();
    w.node(v, -1, Context::Root)?;
    // The document ends on a line of its own; Helm trims that last newline.
    w.write_indent(0);
    if w.out.ends_with('\n') {
        w.out.pop();
    }
    Ok(w.out)
}

/// Where a node sits: this decides indentation and which styles are allowed.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Context {
    Root,
    SequenceItem,
    MappingValue,
    /// A key written inline (`key: value`): never folded, never a block.
    SimpleKey,
    /// A key written after `? `.
    ComplexKey,
}

/// How a scalar is written.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Style {
    Plain,
    SingleQuoted,
    DoubleQuoted,
    Literal,
}

/// The emitter's position: what the next indicator or line break depends on.
struct Writer {
    out: String,
    /// Characters (not bytes) since the last line break.
    column: usize,
    /// The last thing written was whitespace (or nothing yet on this line).
    whitespace: bool,
    /// Only indentation has been written on this line.
    indention: bool,
}

impl Writer {
    fn new() -> Self {
        Writer {
            out: String::new(),
            column: 0,
            whitespace: true,
            indention: true,
        }
    }

    fn put(&mut self, c: char) {
        self.out.push(c);
        self.column += 1;
    }

    fn line_break(&mut self) {
        self.out.push('\n');
        self.column = 0;
    }

    /// Writes a line break from the text (`\n` or a Unicode line separator).
    fn text_break(&mut self, c: char) {
        if c == '\n' {
            self.line_break();
        } else {
            self.out.push(c);
            self.column = 0;
        }
    }

    /// Moves to column `indent` on a new line, unless the line holds only
    /// indentation up to there already.
    fn write_indent(&mut self, indent: i64) {
        let indent = indent.max(0) as usize;
        if !self.indention || self.column > indent || (self.column == indent && !self.whitespace) {
            self.line_break();
        }
        while self.column < indent {
            self.put(' ');
        }
        self.whitespace = true;
        self.indention = true;
    }

    fn indicator(
        &mut self,
        s: &str,
        need_whitespace: bool,
        is_whitespace: bool,
        is_indention: bool,
    ) {
        if need_whitespace && !self.whitespace {
            self.put(' ');
        }
        for c in s.chars() {
            self.put(c);
        }
        self.whitespace = is_whitespace;
        self.indention = self.indention && is_indention;
    }

    /// Writes `v`; `parent` is the indentation of the enclosing collection
    /// (-1 at the root).
    fn node(&mut self, v: &Value, parent: i64, ctx: Context) -> Result<(), HelmYamlError> {
        if let Some(items) = v.as_array() {
            if items.is_empty() {
                self.indicator("[", true, true, false);
                self.indicator("]", false, false, false);
                return Ok(());
            }
            return self.sequence(items, parent, ctx);
        }
        if let Some(map) = v.as_map() {
            if map.is_empty() {
                self.indicator("{", true, true, false);
                self.indicator("}", false, false, false);
                return Ok(());
            }
            let mut entries: Vec<(Cow<'_, str>, &Value)> =
                map.iter().map(|(k, v)| (key_text(k), v)).collect();
            entries.sort_by(|a, b| key_order(&a.0, &b.0));
            return self.mapping(&entries, parent);
        }
        let (text, style) = scalar_text(v)?;
        self.styled_scalar(&text, style, &Analysis::of(&text), parent, ctx);
        Ok(())
    }

    fn sequence(
        &mut self,
        items: &[Value],
        parent: i64,
        ctx: Context,
    ) -> Result<(), HelmYamlError> {
        // A list right after `key:` stays at the key's indentation.
        let indentless = ctx == Context::MappingValue && !self.indention;
        let indent = if parent < 0 {
            0
        } else if indentless {
            parent
        } else {
            parent + 2
        };
        for item in items {
            self.write_indent(indent);
            self.indicator("-", true, false, true);
            self.node(item, indent, Context::SequenceItem)?;
        }
        Ok(())
    }

    fn mapping(
        &mut self,
        entries: &[(Cow<'_, str>, &Value)],
        parent: i64,
    ) -> Result<(), HelmYamlError> {
        let indent = if parent < 0 { 0 } else { parent + 2 };
        for (key, value) in entries {
            self.write_indent(indent);
            let (style, analysis) = string_style(key);
            if !analysis.line_breaks && key.len() <= MAX_SIMPLE_KEY {
                self.styled_scalar(key, style, &analysis, indent, Context::SimpleKey);
                self.indicator(":", false, false, false);
            } else {
                self.indicator("?", true, false, true);
                self.styled_scalar(key, style, &analysis, indent, Context::ComplexKey);
                self.write_indent(indent);
                self.indicator(":", true, false, true);
            }
            self.node(value, indent, Context::MappingValue)?;
        }
        Ok(())
    }

    fn styled_scalar(
        &mut self,
        text: &str,
        requested: Style,
        analysis: &Analysis,
        parent: i64,
        ctx: Context,
    ) {
        let simple_key = ctx == Context::SimpleKey;
        let style = analysis.allowed_style(requested, text.is_empty(), simple_key);
        let indent = if parent < 0 { 2 } else { parent + 2 };
        match style {
            Style::Plain => self.plain(text, indent, !simple_key),
            Style::SingleQuoted => self.single_quoted(text, indent, !simple_key),
            Style::DoubleQuoted => self.double_quoted(text, indent, !simple_key),
            Style::Literal => self.literal(text, indent),
        }
    }

    fn plain(&mut self, text: &str, indent: i64, fold: bool) {
        if !self.whitespace {
            self.put(' ');
        }
        let mut spaces = false;
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            if c == ' ' {
                let next_is_space = chars.peek() == Some(&' ');
                if fold && !spaces && self.column > BEST_WIDTH && !next_is_space {
                    self.write_indent(indent);
                } else {
                    self.put(c);
                }
                spaces = true;
            } else {
                // A plain scalar never holds a line break (the style rules
                // exclude it).
                self.put(c);
                self.indention = false;
                spaces = false;
            }
        }
        self.whitespace = false;
        self.indention = false;
    }

    fn single_quoted(&mut self, text: &str, indent: i64, fold: bool) {
        self.indicator("'", true, false, false);
        let mut spaces = false;
        let mut breaks = false;
        let last = text.len().saturating_sub(1);
        let mut chars = text.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            if c == ' ' {
                let next_is_space = chars.peek().map(|&(_, n)| n) == Some(' ');
                if fold
                    && !spaces
                    && self.column > BEST_WIDTH
                    && i > 0
                    && i < last
                    && !next_is_space
                {
                    self.write_indent(indent);
                } else {
                    self.put(c);
                }
                spaces = true;
            } else if is_break(c) {
                if !breaks && c == '\n' {
                    self.line_break();
                }
                self.text_break(c);
                self.indention = true;
                breaks = true;
            } else {
                if breaks {
                    self.write_indent(indent);
                }
                if c == '\'' {
                    self.put('\'');
                }
                self.put(c);
                self.indention = false;
                spaces = false;
                breaks = false;
            }
        }
        self.indicator("'", false, false, false);
        self.whitespace = false;
        self.indention = false;
    }

    fn double_quoted(&mut self, text: &str, indent: i64, fold: bool) {
        self.indicator("\"", true, false, false);
        // go-yaml's check for a byte order mark looks at the start of the
        // text for every character: after a leading BOM, all are escaped.
        let leading_bom = text.starts_with('\u{feff}');
        let last = text.len().saturating_sub(1);
        let mut spaces = false;
        let mut chars = text.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            if leading_bom || !is_printable(c) || is_break(c) || c == '"' || c == '\\' {
                self.escape(c);
                spaces = false;
            } else if c == ' ' {
                if fold && !spaces && self.column > BEST_WIDTH && i > 0 && i < last {
                    self.write_indent(indent);
                    if chars.peek().map(|&(_, n)| n) == Some(' ') {
                        self.put('\\');
                    }
                } else {
                    self.put(c);
                }
                spaces = true;
            } else {
                self.put(c);
                spaces = false;
            }
        }
        self.indicator("\"", false, false, false);
        self.whitespace = false;
        self.indention = false;
    }

    fn escape(&mut self, c: char) {
        self.put('\\');
        let short = match c {
            '\0' => Some('0'),
            '\u{7}' => Some('a'),
            '\u{8}' => Some('b'),
            '\t' => Some('t'),
            '\n' => Some('n'),
            '\u{b}' => Some('v'),
            '\u{c}' => Some('f'),
            '\r' => Some('r'),
            '\u{1b}' => Some('e'),
            '"' => Some('"'),
            '\\' => Some('\\'),
            '\u{85}' => Some('N'),
            '\u{a0}' => Some('_'),
            '\u{2028}' => Some('L'),
            '\u{2029}' => Some('P'),
            _ => None,
        };
        if let Some(s) = short {
            self.put(s);
            return;
        }
        let code = u32::from(c);
        let (letter, digits) = if code <= 0xFF {
            ('x', 2)
        } else if code <= 0xFFFF {
            ('u', 4)
        } else {
            ('U', 8)
        };
        self.put(letter);
        for k in (0..digits).rev() {
            let digit = (code >> (k * 4)) & 0xF;
            let ch = char::from_digit(digit, 16).map_or('0', |d| d.to_ascii_uppercase());
            self.put(ch);
        }
    }

    fn literal(&mut self, text: &str, indent: i64) {
        self.indicator("|", true, false, false);
        if text.starts_with(' ') || text.chars().next().is_some_and(is_break) {
            self.indicator("2", false, false, false);
        }
        if let Some(chomp) = chomp_indicator(text) {
            self.indicator(chomp, false, false, false);
        }
        self.line_break();
        self.indention = true;
        self.whitespace = true;
        let mut breaks = true;
        for c in text.chars() {
            if is_break(c) {
                self.text_break(c);
                self.indention = true;
                breaks = true;
            } else {
                if breaks {
                    self.write_indent(indent);
                }
                self.put(c);
                self.indention = false;
                breaks = false;
            }
        }
    }
}

/// `-` (strip) when the text does not end in a line break, `+` (keep) when
/// it ends in two or is one, none (clip) when it ends in exactly one.
fn chomp_indicator(text: &str) -> Option<&'static str> {
    let mut rev = text.chars().rev();
    match rev.next() {
        None => Some("-"),
        Some(last) if !is_break(last) => Some("-"),
        Some(_) => match rev.next() {
            None => Some("+"),
            Some(before) if is_break(before) => Some("+"),
            Some(_) => None,
        },
    }
}

/// What a scalar's characters allow, as go-yaml's emitter analyses them.
struct Analysis {
    line_breaks: bool,
    block_plain_allowed: bool,
    single_quoted_allowed: bool,
    block_allowed: bool,
}

impl Analysis {
    fn of(text: &str) -> Self {
        if text.is_empty() {
            return Analysis {
                line_breaks: false,
                block_plain_allowed: true,
                single_quoted_allowed: true,
                block_allowed: false,
            };
        }
        let mut block_indicators = text.starts_with("---") || text.starts_with("...");
        let mut line_breaks = false;
        let mut special = false;
        let (mut leading_space, mut leading_break) = (false, false);
        let (mut trailing_space, mut trailing_break) = (false, false);
        let (mut break_space, mut space_break) = (false, false);
        let (mut previous_space, mut previous_break) = (false, false);
        let mut preceded_by_whitespace = true;
        let mut chars = text.chars().peekable();
        let mut first = true;
        while let Some(c) = chars.next() {
            let next = chars.peek().copied();
            let followed_by_whitespace = next.is_none_or(|n| n == ' ' || n == '\t');
            if first {
                match c {
                    '#' | ',' | '[' | ']' | '{' | '}' | '&' | '*' | '!' | '|' | '>' | '\''
                    | '"' | '%' | '@' | '`' => block_indicators = true,
                    '?' | ':' | '-' if followed_by_whitespace => block_indicators = true,
                    _ => {}
                }
            } else {
                match c {
                    ':' if followed_by_whitespace => block_indicators = true,
                    '#' if preceded_by_whitespace => block_indicators = true,
                    _ => {}
                }
            }
            if !is_printable(c) {
                special = true;
            }
            let last = next.is_none();
            if c == ' ' {
                leading_space |= first;
                trailing_space |= last;
                break_space |= previous_break;
                previous_space = true;
                previous_break = false;
            } else if is_break(c) {
                line_breaks = true;
                leading_break |= first;
                trailing_break |= last;
                space_break |= previous_space;
                previous_space = false;
                previous_break = true;
            } else {
                previous_space = false;
                previous_break = false;
            }
            preceded_by_whitespace = c == ' ' || c == '\t' || c == '\0' || is_break(c);
            first = false;
        }
        let edges = leading_space || leading_break || trailing_space || trailing_break;
        Analysis {
            line_breaks,
            block_plain_allowed: !(edges
                || break_space
                || space_break
                || special
                || line_breaks
                || block_indicators),
            single_quoted_allowed: !(break_space || space_break || special),
            block_allowed: !(trailing_space || space_break || special),
        }
    }

    /// The style go-yaml writes when `requested` is asked for.
    fn allowed_style(&self, requested: Style, empty: bool, simple_key: bool) -> Style {
        let mut style = requested;
        if simple_key && self.line_breaks {
            style = Style::DoubleQuoted;
        }
        if style == Style::Plain && (!self.block_plain_allowed || (empty && simple_key)) {
            style = Style::SingleQuoted;
        }
        if style == Style::SingleQuoted && !self.single_quoted_allowed {
            style = Style::DoubleQuoted;
        }
        if style == Style::Literal && (!self.block_allowed || simple_key) {
            style = Style::DoubleQuoted;
        }
        style
    }
}

/// A string's requested style and its analysis.
fn string_style(s: &str) -> (Style, Analysis) {
    (requested_string_style(s), Analysis::of(s))
}

/// The style go-yaml's encoder asks for a string: a block for text with a
/// newline, plain when it reads back as the same string, quoted otherwise.
fn requested_string_style(s: &str) -> Style {
    if s.contains('\n') {
        Style::Literal
    } else if resolves_as_string(s) && !is_base60_float(s) {
        Style::Plain
    } else {
        Style::DoubleQuoted
    }
}

/// The text and requested style of a scalar value.
fn scalar_text(v: &Value) -> Result<(Cow<'_, str>, Style), HelmYamlError> {
    if v.is_none() || v.is_undefined() {
        return Ok((Cow::Borrowed("null"), Style::Plain));
    }
    if let Some(b) = v.as_bool() {
        return Ok((
            Cow::Borrowed(if b { "true" } else { "false" }),
            Style::Plain,
        ));
    }
    if let Some(s) = v.as_str() {
        return Ok((Cow::Borrowed(s), requested_string_style(s)));
    }
    if v.is_i64() || v.is_u64() || v.is_i128() || v.is_u128() {
        return Ok((Cow::Owned(format!("{v}")), Style::Plain));
    }
    if let Some(f) = v.as_f64() {
        if !f.is_finite() {
            return Err(HelmYamlError(format!(
                "{f} cannot be written (JSON has no such number)"
            )));
        }
        return Ok((Cow::Owned(float_text(f)), Style::Plain));
    }
    if let Some(bytes) = v.as_bytes() {
        let s = String::from_utf8_lossy(bytes);
        let style = requested_string_style(&s);
        return Ok((s, style));
    }
    Err(HelmYamlError(format!("cannot write a {} value", v.name())))
}

/// A map key's text: Helm's values have string keys; others print as text.
fn key_text<'a>(k: &'a tera::value::Key<'static>) -> Cow<'a, str> {
    match k.as_str() {
        Some(s) => Cow::Borrowed(s),
        None => Cow::Owned(k.as_value().to_string()),
    }
}

/// A float as JSON and go-yaml v2 together write it: integral values that fit
/// 64 bits as integers, the rest as Go's shortest `%g`.
fn float_text(f: f64) -> String {
    if f.fract() == 0.0 && f.abs() < 1e21 {
        if (-9.223_372_036_854_776e18..9.223_372_036_854_776e18).contains(&f) {
            return format!("{}", f as i64);
        }
        if (0.0..1.844_674_407_370_955_2e19).contains(&f) {
            return format!("{}", f as u64);
        }
    }
    go_shortest_g(f)
}

/// Go's `strconv.FormatFloat(f, 'g', -1, 64)`: the shortest digits, in
/// exponent form when the exponent is below -4 or at least 6.
fn go_shortest_g(f: f64) -> String {
    let sci = format!("{:e}", f.abs());
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let sign = if f.is_sign_negative() { "-" } else { "" };
    if !(-4..6).contains(&exp) {
        let (first, rest) = digits.split_at(1);
        let dot = if rest.is_empty() { "" } else { "." };
        let esign = if exp < 0 { '-' } else { '+' };
        return format!("{sign}{first}{dot}{rest}e{esign}{:02}", exp.abs());
    }
    // Plain decimal: digits with the point placed by the exponent.
    let point = exp + 1;
    if point <= 0 {
        let zeros = "0".repeat(point.unsigned_abs() as usize);
        format!("{sign}0.{zeros}{digits}")
    } else {
        let point = point as usize;
        if digits.len() <= point {
            format!("{sign}{digits}{}", "0".repeat(point - digits.len()))
        } else {
            format!("{sign}{}.{}", &digits[..point], &digits[point..])
        }
    }
}

/// go-yaml v2's key order for string keys.
fn key_order(a: &str, b: &str) -> Ordering {
    if key_less(a, b) {
        Ordering::Less
    } else if key_less(b, a) {
        Ordering::Greater
    } else {
        Ordering::Equal
    }
}

fn key_less(a: &str, b: &str) -> bool {
    if a.is_ascii() && b.is_ascii() {
        return units_less(a.as_bytes(), b.as_bytes());
    }
    let ar: Vec<char> = a.chars().collect();
    let br: Vec<char> = b.chars().collect();
    units_less(&ar, &br)
}

/// The comparison itself, over bytes (ASCII keys) or characters.
fn units_less<T: Copy + Into<char>>(ar: &[T], br: &[T]) -> bool {
    let digit = |c: T| c.into().is_ascii_digit();
    for i in 0..ar.len().min(br.len()) {
        let (a, b): (char, char) = (ar[i].into(), br[i].into());
        if a == b {
            continue;
        }
        let (al, bl) = (a.is_alphabetic(), b.is_alphabetic());
        if al && bl {
            return a < b;
        }
        if al || bl {
            return bl;
        }
        // Digit runs compare by value; a run of zeros after a non-zero digit
        // counts as a number that starts with that digit.
        let (mut an, mut bn): (i64, i64) = (0, 0);
        if (a == '0' || b == '0')
            && ar[..i]
                .iter()
                .rev()
                .take_while(|&&c| digit(c))
                .any(|&c| c.into() != '0')
        {
            an = 1;
            bn = 1;
        }
        let value = |n: i64, c: T| {
            n.wrapping_mul(10)
                .wrapping_add(i64::from(c.into() as u8 - b'0'))
        };
        let mut ai = i;
        while ai < ar.len() && digit(ar[ai]) {
            an = value(an, ar[ai]);
            ai += 1;
        }
        let mut bi = i;
        while bi < br.len() && digit(br[bi]) {
            bn = value(bn, br[bi]);
            bi += 1;
        }
        if an != bn {
            return an < bn;
        }
        if ai != bi {
            return ai < bi;
        }
        return a < b;
    }
    ar.len() < br.len()
}

/// go-yaml's printable set: the characters it writes unescaped.
fn is_printable(c: char) -> bool {
    matches!(c, '\n' | '\u{20}'..='\u{7e}' | '\u{a0}'..='\u{d7ff}' | '\u{e000}'..='\u{fffd}')
        && c != '\u{feff}'
}

fn is_break(c: char) -> bool {
    matches!(c, '\r' | '\n' | '\u{85}' | '\u{2028}' | '\u{2029}')
}

/// Whether go-yaml v2 reads `s`, written plain, back as a string (YAML 1.1
/// resolution: booleans such as `yes`/`on`, nulls, integers in any base,
/// floats, timestamps).
fn resolves_as_string(s: &str) -> bool {
    let Some(first) = s.bytes().next() else {
        return false; // the empty string reads back as null
    };
    match first {
        b'y' | b'Y' | b'n' | b'N' | b't' | b'T' | b'f' | b'F' | b'o' | b'O' | b'~' => {
            !is_yaml11_keyword(s)
        }
        b'.' => !is_yaml11_keyword(s) && !parses_as_go_float(s),
        b'+' | b'-' | b'0'..=b'9' => {
            if is_yaml11_keyword(s) || is_timestamp(s) {
                return false;
            }
            let plain: String = s.chars().filter(|&c| c != '_').collect();
            !(parses_as_go_int(&plain) || parses_as_go_float(&plain))
        }
        _ => true,
    }
}

fn is_yaml11_keyword(s: &str) -> bool {
    matches!(
        s,
        "y" | "Y"
            | "yes"
            | "Yes"
            | "YES"
            | "true"
            | "True"
            | "TRUE"
            | "on"
            | "On"
            | "ON"
            | "n"
            | "N"
            | "no"
            | "No"
            | "NO"
            | "false"
            | "False"
            | "FALSE"
            | "off"
            | "Off"
            | "OFF"
            | "~"
            | "null"
            | "Null"
            | "NULL"
            | ".nan"
            | ".NaN"
            | ".NAN"
            | ".inf"
            | ".Inf"
            | ".INF"
            | "+.inf"
            | "+.Inf"
            | "+.INF"
            | "-.inf"
            | "-.Inf"
            | "-.INF"
            | "<<"
    )
}

/// Go's `strconv.ParseInt(s, 0, 64)` or `ParseUint(s, 0, 64)` succeeds: an
/// optional sign, then decimal, `0x` hex, `0o` or leading-`0` octal, or `0b`
/// binary digits, within 64 bits.
fn parses_as_go_int(s: &str) -> bool {
    let (negative, body) = match s.as_bytes().first() {
        Some(b'+') => (false, &s[1..]),
        Some(b'-') => (true, &s[1..]),
        _ => (false, s),
    };
    let lower = body.to_ascii_lowercase();
    let (radix, digits) = if let Some(d) = lower.strip_prefix("0x") {
        (16, d)
    } else if let Some(d) = lower.strip_prefix("0o") {
        (8, d)
    } else if let Some(d) = lower.strip_prefix("0b") {
        (2, d)
    } else if lower.len() > 1 && lower.starts_with('0') {
        (8, &lower[1..])
    } else {
        (10, lower.as_str())
    };
    if digits.is_empty() || !digits.bytes().all(|c| c.is_ascii_hexdigit()) {
        return false;
    }
    let Ok(magnitude) = u64::from_str_radix(digits, radix) else {
        return false;
    };
    if negative {
        magnitude <= 1u64 << 63
    } else {
        // Unsigned (ParseUint) takes what signed cannot; it has no `+`.
        magnitude < 1u64 << 63 || !s.starts_with('+')
    }
}

/// go-yaml's own float pattern: `[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?`.
fn is_yaml_style_float(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    if matches!(b.first(), Some(b'+' | b'-')) {
        i += 1;
    }
    let digits = |i: &mut usize| {
        let start = *i;
        while *i < b.len() && b[*i].is_ascii_digit() {
            *i += 1;
        }
        *i - start
    };
    if b.get(i) == Some(&b'.') {
        i += 1;
        if digits(&mut i) == 0 {
            return false;
        }
    } else {
        if digits(&mut i) == 0 {
            return false;
        }
        if b.get(i) == Some(&b'.') {
            i += 1;
            digits(&mut i);
        }
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        if digits(&mut i) == 0 {
            return false;
        }
    }
    i == b.len()
}

/// go-yaml's float pattern, and a value Go's `strconv.ParseFloat` does not
/// refuse as out of range (`1e400` stays a string).
fn parses_as_go_float(s: &str) -> bool {
    is_yaml_style_float(s) && s.parse::<f64>().is_ok_and(f64::is_finite)
}

/// `1:20`, `-1:30:00.5`: YAML 1.1 sexagesimal numbers, which go-yaml quotes.
fn is_base60_float(s: &str) -> bool {
    let b = s.as_bytes();
    if !matches!(b.first(), Some(b'+' | b'-' | b'0'..=b'9')) || !s.contains(':') {
        return false;
    }
    let mut i = usize::from(matches!(b[0], b'+' | b'-'));
    if !b.get(i).is_some_and(u8::is_ascii_digit) {
        return false;
    }
    while i < b.len() && (b[i].is_ascii_digit() || b[i] == b'_') {
        i += 1;
    }
    let mut groups = 0;
    while b.get(i) == Some(&b':') {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() && i - start < 2 {
            i += 1;
        }
        match i - start {
            1 => {}
            2 if b[start] <= b'5' => {}
            _ => return false,
        }
        groups += 1;
    }
    if groups == 0 {
        return false;
    }
    if b.get(i) == Some(&b'.') {
        i += 1;
        while i < b.len() && (b[i].is_ascii_digit() || b[i] == b'_') {
            i += 1;
        }
    }
    i == b.len()
}

/// go-yaml v2's timestamps: `2006-1-2`, `2006-1-2 15:4:5[.f]` and
/// `2006-1-2T15:4:5[.f]` with `Z` or `±07:00`, with valid dates and times.
fn is_timestamp(s: &str) -> bool {
    timestamp(s.as_bytes()).is_some()
}

fn timestamp(b: &[u8]) -> Option<()> {
    if b.len() < 5 || !b[..4].iter().all(u8::is_ascii_digit) || b[4] != b'-' {
        return None;
    }
    let year: u32 = b[..4].iter().fold(0, |n, d| n * 10 + u32::from(d - b'0'));
    let mut p = Cursor { b, i: 5 };
    let month = p.number(1)?;
    let day = p.after(b'-', 1)?;
    let valid_date = (1..=12).contains(&month) && (1..=days_in_month(year, month)).contains(&day);
    if !valid_date || p.done() {
        return valid_date.then_some(());
    }
    let zoned = match b[p.i] {
        b'T' | b't' => true,
        b' ' => false,
        _ => return None,
    };
    p.i += 1;
    let hour = p.number(1)?;
    let minute = p.after(b':', 1)?;
    let second = p.after(b':', 1)?;
    if hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    if matches!(b.get(p.i), Some(b'.' | b',')) && b.get(p.i + 1).is_some_and(u8::is_ascii_digit) {
        p.i += 1;
        while b.get(p.i).is_some_and(u8::is_ascii_digit) {
            p.i += 1;
        }
    }
    if zoned && !p.eat(b'Z') {
        if !matches!(b.get(p.i), Some(b'+' | b'-')) {
            return None;
        }
        p.i += 1;
        let (zone_hours, zone_minutes) = (p.number(2)?, p.after(b':', 2)?);
        if zone_hours > 24 || zone_minutes > 60 {
            return None;
        }
    }
    p.done().then_some(())
}

/// Reads the digits of a timestamp.
struct Cursor<'a> {
    b: &'a [u8],
    i: usize,
}

impl Cursor<'_> {
    /// A number of `min` to 2 digits.
    fn number(&mut self, min: usize) -> Option<u32> {
        let start = self.i;
        let mut n = 0u32;
        while self.i < self.b.len() && self.b[self.i].is_ascii_digit() && self.i - start < 2 {
            n = n * 10 + u32::from(self.b[self.i] - b'0');
            self.i += 1;
        }
        (self.i - start >= min).then_some(n)
    }

    /// `separator`, then a number of `min` to 2 digits.
    fn after(&mut self, separator: u8, min: usize) -> Option<u32> {
        if !self.eat(separator) {
            return None;
        }
        self.number(min)
    }

    fn eat(&mut self, c: u8) -> bool {
        let hit = self.b.get(self.i) == Some(&c);
        self.i += usize::from(hit);
        hit
    }

    fn done(&self) -> bool {
        self.i == self.b.len()
    }
}

fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        2 if year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400)) => {
            29
        }
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn yaml(v: serde_json::Value) -> String {
        to_helm_yaml(&Value::from_serializable(&v)).expect("writable")
    }

    /// `k: <value>` for a string value.
    fn value_of(s: &str) -> String {
        let out = yaml(json!({ "k": s }));
        out.strip_prefix("k:").expect("the key").to_string()
    }

    #[test]
    fn layout_is_helms_block_style() {
        let v = json!({
            "b": [1, {"x": "z", "a": []}],
            "a": {"c": null, "d": {}},
            "e": [[1, 2], "s"],
        });
        assert_eq!(
            yaml(v),
            "a:\n  c: null\n  d: {}\nb:\n- 1\n- a: []\n  x: z\ne:\n- - 1\n  - 2\n- s"
        );
        assert_eq!(yaml(json!({})), "{}");
        assert_eq!(yaml(json!([])), "[]");
        assert_eq!(yaml(json!(null)), "null");
        assert_eq!(yaml(json!("text")), "text");
        assert_eq!(yaml(json!([{"a": {"b": [1]}}])), "- a:\n    b:\n    - 1");
    }

    #[test]
    fn keys_sort_the_go_yaml_v2_way() {
        let v = json!({"a10": 1, "a9": 1, "B": 1, "_x": 1, "a": 1, "a-b": 1, "a.b": 1, "1": 1});
        let keys: Vec<String> = yaml(v)
            .lines()
            .map(|l| l.split(": ").next().expect("a key").to_string())
            .collect();
        assert_eq!(keys, ["_x", "\"1\"", "B", "a", "a-b", "a.b", "a9", "a10"]);
        assert_eq!(key_order("app10", "app9"), Ordering::Greater);
        assert_eq!(key_order("x01", "x1"), Ordering::Greater);
        assert_eq!(key_order("same", "same"), Ordering::Equal);
    }

    #[test]
    fn numbers_are_written_as_json_then_go_yaml_write_them() {
        let v = json!([
            1,
            -7,
            1000000,
            2.0,
            0.5,
            1234567.5,
            0.0001,
            0.00001,
            1e21,
            1e20,
            123456.7,
            -0.0,
            18446744073709551615u64
        ]);
        assert_eq!(
            yaml(v),
            "- 1\n- -7\n- 1000000\n- 2\n- 0.5\n- 1.2345675e+06\n- 0.0001\n- 1e-05\n- 1e+21\n- 1e+20\n- 123456.7\n- 0\n- 18446744073709551615"
        );
        assert_eq!(yaml(json!([true, false])), "- true\n- false");
    }

    #[test]
    fn strings_that_read_back_as_another_type_are_double_quoted() {
        for s in [
            "true",
            "True",
            "yes",
            "Yes",
            "y",
            "N",
            "on",
            "OFF",
            "null",
            "~",
            "",
            "1_000",
            "0x1F",
            "0o17",
            "0777",
            "08",
            "1e3",
            ".5",
            "+1",
            "-1.5",
            "1.",
            ".inf",
            "-.inf",
            "12:30",
            "-1:30:00.5",
            "2026-01-02",
            "2026-1-2T3:04:05Z",
            "2026-01-02T10:00:00.5+02:00",
            "2026-01-02 10:00:00",
            "18446744073709551615",
            "99999999999999999999",
        ] {
            assert_eq!(value_of(s), format!(" \"{s}\""), "{s:?}");
        }
    }

    #[test]
    fn strings_that_read_back_as_themselves_are_plain() {
        for s in [
            "text",
            "yess",
            "nope",
            "0x",
            "0xFFFFFFFFFFFFFFFFFF",
            "1e400",
            "1:60",
            "2026-02-30",
            "2026-01-02T10:00:00",
            "<<",
            "::1",
            "a#b",
            "-a",
            "it's",
            "a:b",
            "é",
            "v1.2.3",
            "10Gi",
            "100m",
            ".example.com",
        ] {
            assert_eq!(value_of(s), format!(" {s}"), "{s:?}");
        }
    }

    #[test]
    fn strings_that_cannot_be_plain_are_single_quoted() {
        for (s, written) in [
            ("*", "'*'"),
            ("*.example.com", "'*.example.com'"),
            ("@x", "'@x'"),
            ("%x", "'%x'"),
            ("[a]", "'[a]'"),
            ("{a}", "'{a}'"),
            ("!x", "'!x'"),
            ("a: b", "'a: b'"),
            ("a #b", "'a #b'"),
            (" a", "' a'"),
            ("a ", "'a '"),
            ("- a", "'- a'"),
            ("'q'", "'''q'''"),
            ("---", "'---'"),
            ("a:", "'a:'"),
        ] {
            assert_eq!(value_of(s), format!(" {written}"), "{s:?}");
        }
    }

    #[test]
    fn control_and_astral_characters_are_escaped_in_double_quotes() {
        assert_eq!(value_of("a\tb"), r#" "a\tb""#);
        assert_eq!(value_of("smile 😀"), r#" "smile \U0001F600""#);
        assert_eq!(value_of("del\u{7f}"), r#" "del\x7F""#);
        assert_eq!(value_of("a\"b\\\r"), r#" "a\"b\\\r""#);
        assert_eq!(value_of("\u{feff}ab"), r#" "\uFEFF\x61\x62""#);
    }

    #[test]
    fn text_with_newlines_is_a_literal_block() {
        assert_eq!(value_of("a\nb"), " |-\n  a\n  b");
        assert_eq!(value_of("a\nb\n"), " |\n  a\n  b");
        assert_eq!(value_of("a\n\n"), " |+\n  a\n");
        assert_eq!(value_of(" a\nb"), " |2-\n   a\n  b");
        assert_eq!(value_of("\na"), " |2-\n\n  a");
        assert_eq!(value_of("a\n\nb"), " |-\n  a\n\n  b");
        // A space before a line break rules the block out.
        assert_eq!(value_of("a \nb"), r#" "a \nb""#);
        assert_eq!(value_of("tab\there\n"), r#" "tab\there\n""#);
        assert_eq!(yaml(json!({"k": "a\n", "l": 1})), "k: |\n  a\nl: 1");
        assert_eq!(yaml(json!(["a\nb", "c"])), "- |-\n  a\n  b\n- c");
        assert_eq!(
            yaml(json!({"k": {"name": "x\ny"}})),
            "k:\n  name: |-\n    x\n    y"
        );
    }

    #[test]
    fn long_strings_fold_at_a_space_after_80_columns() {
        let words = "word ".repeat(30);
        let s = words.trim_end();
        let out = yaml(json!({"key": s}));
        let lines: Vec<&str> = out.lines().collect();
        assert!(lines.len() > 1, "{out}");
        // Each line goes just past column 80 before breaking at the next space.
        assert_eq!(lines[0].len(), 84, "{out}");
        assert!(lines[1].starts_with("  word"), "{out}");
        let joined = lines
            .iter()
            .map(|l| l.trim_start())
            .collect::<Vec<_>>()
            .join(" ");
        assert_eq!(joined, format!("key: {s}"));

        let quoted = format!("'{s}");
        let out = yaml(json!({"key": quoted}));
        assert!(out.starts_with("key: '''word"), "{out}");
        assert!(
            out.lines().nth(1).is_some_and(|l| l.starts_with("  word")),
            "{out}"
        );

        let double = format!("{s}\t");
        let out = yaml(json!({"key": double}));
        assert!(out.starts_with("key: \"word"), "{out}");
        assert!(out.ends_with("word\\t\""), "{out}");
        assert!(out.lines().count() > 1, "{out}");

        // Keys (up to 128 bytes) and literal blocks are never folded.
        let key = "word ".repeat(25);
        let out = yaml(json!({key.trim_end(): 1}));
        assert_eq!(out.lines().count(), 1, "{out}");
        let block = format!("{s}\nend");
        let out = yaml(json!({"key": block}));
        assert_eq!(out.lines().count(), 3, "{out}");
    }

    #[test]
    fn awkward_keys() {
        assert_eq!(yaml(json!({"": 1})), "\"\": 1");
        assert_eq!(yaml(json!({"a: b": 1})), "'a: b': 1");
        assert_eq!(yaml(json!({"yes": "no"})), "\"yes\": \"no\"");
        assert_eq!(yaml(json!({"two\nlines": 1})), "? |-\n  two\n  lines\n: 1");
        let long = "k".repeat(129);
        assert_eq!(yaml(json!({long.clone(): [1]})), format!("? {long}\n: - 1"));
    }

    /// libyaml's emitter, which go-yaml v2's is a port of, writes the same
    /// text for thousands of generated strings in six positions (needs
    /// python3 with PyYAML built on libyaml, as `.ci/run` installs).
    #[test]
    fn matches_libyaml_on_generated_strings() {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/tools/libyaml_cases.py");
        let out = std::process::Command::new("python3")
            .args([script, "20261202", "4000"])
            .output()
            .expect("python3 runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let cases: Vec<serde_json::Value> =
            serde_json::from_slice(&out.stdout).expect("JSON cases");
        assert_eq!(cases.len(), 4000);
        let mut differing = Vec::new();
        for case in &cases {
            let written = yaml(case["value"].clone());
            let expected = case["expected"].as_str().expect("expected text");
            if written != expected {
                differing.push(format!(
                    "{}\nlibyaml:\n{expected}\nto_yaml:\n{written}",
                    case["value"]
                ));
            }
        }
        assert!(
            differing.is_empty(),
            "{} of {} differ; the first:\n{}",
            differing.len(),
            cases.len(),
            differing
                .iter()
                .take(3)
                .cloned()
                .collect::<Vec<_>>()
                .join("\n---\n")
        );
    }
}
