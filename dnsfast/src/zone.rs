//! Zone master files (RFC 1035 §5.1) and the in-memory zone built from them.
//!
//! The reader is ours so that every error names the file, line and field, and so `$INCLUDE`
//! takes an origin; record data other than A/AAAA is handed to hickory-proto's parser one record
//! at a time. [`Zone::build`] refuses zones a server must not serve: no SOA, CNAME beside other
//! data, out-of-zone data, in-zone NS targets without addresses.

use std::{
    fmt,
    net::{Ipv4Addr, Ipv6Addr},
    path::{Path, PathBuf},
    str::FromStr,
    sync::Arc,
};

use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};
use hickory_proto::{
    rr::{
        LowerName, Name, RData, Record, RecordType,
        rdata::{A, AAAA, NULL, TXT},
    },
    serialize::{
        binary::{BinDecoder, Restrict},
        txt::{Parser, parse_ttl},
    },
};

/// Deepest `$INCLUDE` nesting accepted.
const MAX_INCLUDE_DEPTH: usize = 8;

/// A zone-file or zone-content error: file, line, field, message.
#[derive(Debug, Clone, thiserror::Error)]
pub struct ZoneError {
    /// The file to fix: the one the problem is in or, for a file that cannot be opened or read
    /// or that closes an `$INCLUDE` loop, the one that names it (see [`NamedAt`]).
    pub file: PathBuf,
    /// 1-based line (0 when the problem is the zone as a whole).
    pub line: usize,
    /// Which part: of a record `owner`, `ttl`, `class`, `type`, `rdata`; else `directive`,
    /// `file` (its bytes), `zone`, or the configuration key that names the file (`zone.file`).
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ZoneError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}: {}: {}",
            self.file.display(),
            self.line,
            self.field,
            self.message
        )
    }
}

/// A record and where it was read.
#[derive(Clone, Debug)]
pub struct SourceRecord {
    /// The record (class IN).
    pub record: Record,
    /// File it came from.
    pub file: Arc<PathBuf>,
    /// Line its entry starts on.
    pub line: usize,
}

/// One token of an entry, as written (quotes and escapes kept).
#[derive(Debug)]
struct Token {
    text: String,
    quoted: bool,
}

/// One logical entry: a record or a directive, possibly spread over lines by parentheses.
#[derive(Debug)]
struct Entry {
    line: usize,
    /// The entry starts with blank space: its owner is the previous owner.
    blank_owner: bool,
    tokens: Vec<Token>,
}

/// Splits master-file text into entries.
fn lex(text: &str, file: &Path) -> Result<Vec<Entry>, ZoneError> {
    let err = |line: usize, message: &str| ZoneError {
        file: file.to_path_buf(),
        line,
        field: "syntax".into(),
        message: message.into(),
    };
    let bytes = text.as_bytes();
    let mut entries = Vec::new();
    let mut line = 1;
    let mut paren_line = 0;
    let mut depth = 0usize;
    let mut current = Entry {
        line: 1,
        blank_owner: false,
        tokens: Vec::new(),
    };
    let mut token: Option<Token> = None;
    let mut at_line_start = true;
    let mut i = 0;

    let flush_token = |token: &mut Option<Token>, current: &mut Entry| {
        if let Some(t) = token.take() {
            current.tokens.push(t);
        }
    };

    while i < bytes.len() {
        let c = bytes[i];
        if at_line_start && depth == 0 {
            // A new logical entry starts here.
            if !current.tokens.is_empty() {
                entries.push(std::mem::replace(
                    &mut current,
                    Entry {
                        line,
                        blank_owner: false,
                        tokens: Vec::new(),
                    },
                ));
            }
            current.line = line;
            current.blank_owner = c == b' ' || c == b'\t';
        }
        at_line_start = false;
        match c {
            b'\n' => {
                flush_token(&mut token, &mut current);
                line += 1;
                at_line_start = true;
                i += 1;
            }
            b' ' | b'\t' | b'\r' => {
                flush_token(&mut token, &mut current);
                i += 1;
            }
            b';' => {
                flush_token(&mut token, &mut current);
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b'(' => {
                flush_token(&mut token, &mut current);
                if depth == 0 {
                    paren_line = line;
                }
                depth += 1;
                i += 1;
            }
            b')' => {
                flush_token(&mut token, &mut current);
                if depth == 0 {
                    return Err(err(line, "')' without a matching '('"));
                }
                depth -= 1;
                i += 1;
            }
            b'"' => {
                flush_token(&mut token, &mut current);
                let start = i;
                i += 1;
                loop {
                    match bytes.get(i) {
                        None | Some(b'\n') => return Err(err(line, "unterminated quoted string")),
                        Some(b'\\') => i += 2,
                        Some(b'"') => {
                            i += 1;
                            break;
                        }
                        Some(_) => i += 1,
                    }
                }
                let end = i.min(bytes.len());
                current.tokens.push(Token {
                    text: text[start..end].to_string(),
                    quoted: true,
                });
            }
            _ => {
                let t = token.get_or_insert_with(|| Token {
                    text: String::new(),
                    quoted: false,
                });
                if c == b'\\' {
                    // Keep the escape as written; names and hickory decode it.
                    let end = (i + 2).min(bytes.len());
                    let Some(s) = text.get(i..end) else {
                        return Err(err(line, "escape splits a UTF-8 character"));
                    };
                    if s.ends_with('\n') {
                        return Err(err(line, "escaped line break"));
                    }
                    t.text.push_str(s);
                    i = end;
                } else {
                    // Copy one UTF-8 character.
                    let ch = text[i..].chars().next().expect("in bounds");
                    t.text.push(ch);
                    i += ch.len_utf8();
                }
            }
        }
    }
    flush_token(&mut token, &mut current);
    if depth > 0 {
        return Err(err(paren_line, "'(' is never closed"));
    }
    if !current.tokens.is_empty() {
        entries.push(current);
    }
    Ok(entries)
}

/// Where a master file is named: the configuration's `file` key or an `$INCLUDE` directive.
///
/// Errors about the file as a whole (missing, unreadable, closing an `$INCLUDE` loop) point
/// here: that is the line to change, while the file itself may have no lines at all.
#[derive(Clone, Copy, Debug)]
pub struct NamedAt<'a> {
    /// The naming file.
    pub file: &'a Path,
    /// The line that names it (0 when nothing does: the file was given directly).
    pub line: usize,
    /// The key or field that names it (`zone.file`, `directive`).
    pub field: &'a str,
}

impl<'a> NamedAt<'a> {
    /// A file given directly, named by nothing: errors point at the file itself.
    #[must_use]
    pub fn itself(file: &'a Path) -> Self {
        Self {
            file,
            line: 0,
            field: "file",
        }
    }
}

/// A file being read, outermost first.
struct Frame {
    /// For loop detection: the same file reached under two names is still a loop.
    canonical: PathBuf,
    /// As it was named, for messages.
    path: PathBuf,
    /// Line of the `$INCLUDE` (in the frame below) that named it.
    named_line: usize,
}

/// The `$INCLUDE` chain that reaches `target` from the directive at `line` of the innermost
/// file: `main.zone:2 → a.inc:1 → b.inc`. Paths are shown relative to the outermost file's
/// directory, as they are usually written.
fn include_chain(stack: &[Frame], line: usize, target: &Path) -> String {
    let base = stack
        .first()
        .and_then(|f| f.path.parent())
        .unwrap_or(Path::new(""));
    let show = |p: &Path| p.strip_prefix(base).unwrap_or(p).display().to_string();
    let mut parts: Vec<String> = stack
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let at = stack.get(i + 1).map_or(line, |next| next.named_line);
            format!("{}:{at}", show(&f.path))
        })
        .collect();
    parts.push(show(target));
    parts.join(" → ")
}

/// The text of master file `path`, or where its first byte that is not UTF-8 is.
fn utf8_text<'a>(bytes: &'a [u8], path: &Path) -> Result<&'a str, ZoneError> {
    std::str::from_utf8(bytes).map_err(|e| {
        let offset = e.valid_up_to();
        let before = &bytes[..offset];
        let line_start = before
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1);
        let line = before.split(|&b| b == b'\n').count();
        let column = std::str::from_utf8(&before[line_start..])
            .expect("valid up to the offset")
            .chars()
            .count()
            + 1;
        ZoneError {
            file: path.to_path_buf(),
            line,
            field: "file".into(),
            message: format!(
                "byte {:#04x} at offset {offset} (line {line}, column {column}) is not UTF-8; \
                 write other bytes as \\DDD escapes",
                bytes[offset]
            ),
        }
    })
}

/// Reading state that `$INCLUDE` inherits.
#[derive(Clone)]
struct ReadState {
    origin: Name,
    default_ttl: Option<u32>,
    last_ttl: Option<u32>,
    last_owner: Option<Name>,
}

/// Reads the master file `path` of the zone `origin` (and its `$INCLUDE`s).
pub fn read_file(path: &Path, origin: &Name) -> Result<Vec<SourceRecord>, ZoneError> {
    read_file_named_at(path, origin, NamedAt::itself(path))
}

/// Reads the master file `path` of the zone `origin`, named at `at` (errors about the file as a
/// whole point there).
pub fn read_file_named_at(
    path: &Path,
    origin: &Name,
    at: NamedAt<'_>,
) -> Result<Vec<SourceRecord>, ZoneError> {
    let mut out = Vec::new();
    let mut state = ReadState {
        origin: origin.clone(),
        default_ttl: None,
        last_ttl: None,
        last_owner: None,
    };
    let mut stack = Vec::new();
    read_into(path, at, &mut state, &mut stack, &mut out)?;
    Ok(out)
}

/// Reads zone text (tests, fuzzing) as if from `path`.
pub fn read_text(text: &str, path: &Path, origin: &Name) -> Result<Vec<SourceRecord>, ZoneError> {
    let mut out = Vec::new();
    let mut state = ReadState {
        origin: origin.clone(),
        default_ttl: None,
        last_ttl: None,
        last_owner: None,
    };
    let mut stack = vec![Frame {
        canonical: path.canonicalize().unwrap_or_else(|_| path.to_path_buf()),
        path: path.to_path_buf(),
        named_line: 0,
    }];
    read_entries(text, path, &mut state, &mut stack, &mut out)?;
    Ok(out)
}

fn read_into(
    path: &Path,
    at: NamedAt<'_>,
    state: &mut ReadState,
    stack: &mut Vec<Frame>,
    out: &mut Vec<SourceRecord>,
) -> Result<(), ZoneError> {
    let at_err = |message: String| ZoneError {
        file: at.file.to_path_buf(),
        line: at.line,
        field: at.field.into(),
        message,
    };
    let canonical = path
        .canonicalize()
        .map_err(|e| at_err(format!("cannot open {}: {e}", path.display())))?;
    if stack.iter().any(|f| f.canonical == canonical) {
        return Err(at_err(format!(
            "$INCLUDE loop: {}",
            include_chain(stack, at.line, path)
        )));
    }
    if stack.len() >= MAX_INCLUDE_DEPTH {
        return Err(at_err(format!(
            "$INCLUDE nested deeper than {MAX_INCLUDE_DEPTH}: {}",
            include_chain(stack, at.line, path)
        )));
    }
    let bytes =
        std::fs::read(path).map_err(|e| at_err(format!("cannot read {}: {e}", path.display())))?;
    let text = utf8_text(&bytes, path)?;
    stack.push(Frame {
        canonical,
        path: path.to_path_buf(),
        named_line: at.line,
    });
    let r = read_entries(text, path, state, stack, out);
    stack.pop();
    r
}

fn read_entries(
    text: &str,
    path: &Path,
    state: &mut ReadState,
    stack: &mut Vec<Frame>,
    out: &mut Vec<SourceRecord>,
) -> Result<(), ZoneError> {
    let file = Arc::new(path.to_path_buf());
    for entry in lex(text, path)? {
        let err = |field: &str, message: String| ZoneError {
            file: path.to_path_buf(),
            line: entry.line,
            field: field.into(),
            message,
        };
        let first = &entry.tokens[0];
        if !entry.blank_owner && !first.quoted && first.text.starts_with('$') {
            directive(&entry, path, state, stack, out).map_err(|e| match e {
                Directive::Invalid(m) => err("directive", m),
                Directive::Included(e) => e,
            })?;
            continue;
        }
        let record = record(&entry, state).map_err(|(f, m)| err(f, m))?;
        out.push(SourceRecord {
            record,
            file: Arc::clone(&file),
            line: entry.line,
        });
    }
    Ok(())
}

/// Why a directive failed: its own syntax, or an error inside an included file.
enum Directive {
    Invalid(String),
    Included(ZoneError),
}

impl From<String> for Directive {
    fn from(m: String) -> Self {
        Self::Invalid(m)
    }
}

fn directive(
    entry: &Entry,
    path: &Path,
    state: &mut ReadState,
    stack: &mut Vec<Frame>,
    out: &mut Vec<SourceRecord>,
) -> Result<(), Directive> {
    let name = entry.tokens[0].text.to_ascii_uppercase();
    let args = &entry.tokens[1..];
    match name.as_str() {
        "$ORIGIN" => {
            let [arg] = args else {
                return Err(Directive::Invalid("$ORIGIN takes one domain name".into()));
            };
            state.origin = parse_name(&arg.text, &state.origin)?;
        }
        "$TTL" => {
            let [arg] = args else {
                return Err(Directive::Invalid("$TTL takes one TTL".into()));
            };
            state.default_ttl = Some(ttl_value(&arg.text)?);
        }
        "$INCLUDE" => {
            let (file, origin) = match args {
                [f] => (f, None),
                [f, o] => (f, Some(o)),
                _ => {
                    return Err(Directive::Invalid(
                        "$INCLUDE takes a file name and an optional origin".into(),
                    ));
                }
            };
            let fname = file.text.trim_matches('"');
            let target = path.parent().unwrap_or(Path::new(".")).join(fname);
            // The included file starts from our state; what it changes stays inside it.
            let mut inner = state.clone();
            if let Some(o) = origin {
                inner.origin = parse_name(&o.text, &state.origin)?;
            }
            let at = NamedAt {
                file: path,
                line: entry.line,
                field: "directive",
            };
            read_into(&target, at, &mut inner, stack, out).map_err(Directive::Included)?;
        }
        other => {
            return Err(Directive::Invalid(format!(
                "unknown directive {other} (supported: $ORIGIN, $TTL, $INCLUDE)"
            )));
        }
    }
    Ok(())
}

/// Parses a name from a zone file: `@` is the origin, a name without a final dot is relative to
/// it.
fn parse_name(text: &str, origin: &Name) -> Result<Name, String> {
    if text == "@" {
        return Ok(origin.clone());
    }
    let mut name =
        Name::from_ascii(text).map_err(|e| format!("{text:?} is not a domain name: {e}"))?;
    if !name.is_fqdn() {
        name = name
            .append_domain(origin)
            .map_err(|e| format!("{text:?} with origin {origin} is too long: {e}"))?;
    }
    name.set_fqdn(true);
    Ok(name)
}

fn ttl_value(text: &str) -> Result<u32, String> {
    let v =
        parse_ttl(text).map_err(|_| format!("{text:?} is not a TTL (seconds, or units: 1h30m)"))?;
    if v > i32::MAX as u32 {
        return Err(format!(
            "{text} is larger than the largest TTL, 2147483647 (RFC 2181)"
        ));
    }
    Ok(v)
}

fn looks_like_ttl(text: &str) -> bool {
    text.as_bytes().first().is_some_and(u8::is_ascii_digit)
}

fn is_class(text: &str) -> bool {
    let u = text.to_ascii_uppercase();
    matches!(u.as_str(), "IN" | "CH" | "CS" | "HS" | "NONE" | "ANY") || u.starts_with("CLASS")
}

/// Parses a record type mnemonic or `TYPEnnn` (RFC 3597).
fn parse_type(text: &str) -> Result<RecordType, String> {
    let u = text.to_ascii_uppercase();
    if let Some(n) = u.strip_prefix("TYPE")
        && !n.is_empty()
        && n.bytes().all(|b| b.is_ascii_digit())
    {
        return n
            .parse::<u16>()
            .map(RecordType::from)
            .map_err(|_| format!("{text} is out of range"));
    }
    let t = RecordType::from_str(&u).map_err(|_| format!("unknown record type {text:?}"))?;
    match t {
        RecordType::OPT
        | RecordType::ANY
        | RecordType::AXFR
        | RecordType::IXFR
        | RecordType::TSIG => Err(format!("{u} is a query or meta type, not zone data")),
        _ => Ok(t),
    }
}

/// One record entry. Errors carry the field.
fn record(entry: &Entry, state: &mut ReadState) -> Result<Record, (&'static str, String)> {
    let mut rest = &entry.tokens[..];
    let owner = if entry.blank_owner {
        state.last_owner.clone().ok_or((
            "owner",
            "no owner, and no previous record to take it from".into(),
        ))?
    } else {
        let t = &rest[0];
        rest = &rest[1..];
        if t.quoted {
            return Err(("owner", format!("quoted owner {}", t.text)));
        }
        parse_name(&t.text, &state.origin).map_err(|m| ("owner", m))?
    };
    state.last_owner = Some(owner.clone());

    // TTL and class, in either order, both optional.
    let mut ttl = None;
    let mut class_seen = false;
    for _ in 0..2 {
        let Some(t) = rest.first() else { break };
        if ttl.is_none() && looks_like_ttl(&t.text) {
            ttl = Some(ttl_value(&t.text).map_err(|m| ("ttl", m))?);
        } else if !class_seen && is_class(&t.text) {
            if !t.text.eq_ignore_ascii_case("IN") {
                return Err(("class", format!("class {} is not served (only IN)", t.text)));
            }
            class_seen = true;
        } else {
            break;
        }
        rest = &rest[1..];
    }
    let Some(type_tok) = rest.first() else {
        return Err(("type", "missing record type".into()));
    };
    let rtype = parse_type(&type_tok.text).map_err(|m| ("type", m))?;
    let rdata_tokens = &rest[1..];

    let ttl = match ttl {
        Some(t) => {
            state.last_ttl = Some(t);
            t
        }
        None => state.default_ttl.or(state.last_ttl).ok_or((
            "ttl",
            "no TTL: give one on the record or a $TTL before it".to_string(),
        ))?,
    };
    let rdata = rdata(rtype, rdata_tokens, &owner, &state.origin).map_err(|m| ("rdata", m))?;
    Ok(Record::from_rdata(owner, ttl, rdata))
}

fn one_token(rtype: RecordType, tokens: &[Token]) -> Result<&str, String> {
    match tokens {
        [t] if !t.quoted => Ok(&t.text),
        [] => Err(format!("{rtype} needs an address")),
        _ => Err(format!("{rtype} takes exactly one address")),
    }
}

fn rdata(
    rtype: RecordType,
    tokens: &[Token],
    owner: &Name,
    origin: &Name,
) -> Result<RData, String> {
    if tokens.first().is_some_and(|t| t.text == "\\#") {
        return generic_rdata(rtype, &tokens[1..]);
    }
    match rtype {
        // The common case, and the one large zones are made of: no detour through a parser.
        RecordType::A => {
            let t = one_token(rtype, tokens)?;
            Ipv4Addr::from_str(t)
                .map(|a| RData::A(A(a)))
                .map_err(|_| format!("{t:?} is not an IPv4 address"))
        }
        RecordType::AAAA => {
            let t = one_token(rtype, tokens)?;
            Ipv6Addr::from_str(t)
                .map(|a| RData::AAAA(AAAA(a)))
                .map_err(|_| format!("{t:?} is not an IPv6 address"))
        }
        // Character-strings are decoded here: hickory's parser mangles `\DDD` escapes.
        RecordType::TXT => {
            if tokens.is_empty() {
                return Err("TXT needs at least one character-string".into());
            }
            let strings = tokens
                .iter()
                .map(character_string)
                .collect::<Result<Vec<_>, _>>()?;
            Ok(RData::TXT(TXT::from_bytes(
                strings.iter().map(Vec::as_slice).collect(),
            )))
        }
        RecordType::Unknown(code) => Err(format!(
            "TYPE{code} is unknown here: write its data in RFC 3597 form (\\# length hex)"
        )),
        _ => {
            if tokens.is_empty() {
                return Err(format!("{rtype} needs data"));
            }
            let data: Vec<&str> = tokens.iter().map(|t| t.text.as_str()).collect();
            let text = format!(
                "$ORIGIN {origin}\n{owner} 0 IN {rtype} {}\n",
                data.join(" ")
            );
            let (_, sets) = Parser::new(text, None, Some(origin.clone()))
                .parse()
                .map_err(|e| format!("{rtype}: {e}"))?;
            sets.into_values()
                .next()
                .and_then(|set| set.records_without_rrsigs().next().map(|r| r.data.clone()))
                .ok_or_else(|| format!("{rtype}: no data parsed"))
        }
    }
}

/// The octets of a character-string token (RFC 1035 §5.1): quotes removed, `\X` and `\DDD`
/// escapes decoded, at most 255 octets.
fn character_string(t: &Token) -> Result<Vec<u8>, String> {
    let text = if t.quoted {
        &t.text[1..t.text.len().saturating_sub(1).max(1)]
    } else {
        t.text.as_str()
    };
    let b = text.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'\\' {
            out.push(b[i]);
            i += 1;
            continue;
        }
        let digits = b
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(u8::is_ascii_digit));
        if let Some(d) = digits {
            let v = d.iter().fold(0u32, |v, c| v * 10 + u32::from(c - b'0'));
            let v = u8::try_from(v).map_err(|_| {
                format!(
                    "escape \\{} in {} is above 255",
                    String::from_utf8_lossy(d),
                    t.text
                )
            })?;
            out.push(v);
            i += 4;
        } else if i + 1 < b.len() {
            // `\X` stands for X itself (a whole UTF-8 character if X starts one).
            let n = text[i + 1..].chars().next().map_or(1, char::len_utf8);
            out.extend_from_slice(&b[i + 1..i + 1 + n]);
            i += 1 + n;
        } else {
            return Err(format!("{} ends in a lone backslash", t.text));
        }
    }
    if out.len() > 255 {
        return Err(format!(
            "a character-string holds at most 255 octets, this one {} (split it into several \
             quoted strings)",
            out.len()
        ));
    }
    Ok(out)
}

/// RFC 3597 generic data: `\# <length> <hex>...`.
fn generic_rdata(rtype: RecordType, tokens: &[Token]) -> Result<RData, String> {
    let Some((len_tok, hex)) = tokens.split_first() else {
        return Err("\\# needs a length".into());
    };
    let len: usize = len_tok
        .text
        .parse()
        .map_err(|_| format!("\\# length {:?} is not a number", len_tok.text))?;
    let hex: String = hex.iter().map(|t| t.text.as_str()).collect();
    if !hex.len().is_multiple_of(2) || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("\\# data {hex:?} is not hexadecimal octets"));
    }
    let bytes: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("checked hex"))
        .collect();
    if bytes.len() != len {
        return Err(format!("\\# says {len} octets but has {}", bytes.len()));
    }
    if len > usize::from(u16::MAX) {
        return Err("\\# data longer than 65535 octets".into());
    }
    if let RecordType::Unknown(_) = rtype {
        return Ok(RData::Unknown {
            code: rtype,
            // hickory's NULL::with insists on data; empty RDATA is legal (RFC 3597 `\# 0`).
            rdata: if bytes.is_empty() {
                NULL::new()
            } else {
                NULL::with(bytes)
            },
        });
    }
    // A known type in generic form must still be valid data of that type.
    let mut decoder = BinDecoder::new(&bytes);
    let rdata = RData::read(&mut decoder, rtype, Restrict::new(len as u16))
        .map_err(|e| format!("\\# data is not valid {rtype}: {e}"))?;
    Ok(rdata)
}

/// An RRset: records of one type at one name.
#[derive(Clone, Debug)]
pub struct RRset {
    /// Type.
    pub rtype: RecordType,
    /// TTL (the first record's; RFC 2181 §5.2 wants them equal).
    pub ttl: u32,
    /// Data, in file order, duplicates removed.
    pub rdatas: Vec<RData>,
}

impl RRset {
    /// The records of this set with owner `owner`.
    pub fn records<'a>(&'a self, owner: &'a Name) -> impl Iterator<Item = Record> + 'a {
        self.rdatas
            .iter()
            .map(move |d| Record::from_rdata(owner.clone(), self.ttl, d.clone()))
    }
}

/// The data at one name.
#[derive(Clone, Debug, Default)]
pub struct Node {
    /// RRsets, one per type.
    pub rrsets: Vec<RRset>,
}

impl Node {
    /// The RRset of type `t`.
    #[must_use]
    pub fn get(&self, t: RecordType) -> Option<&RRset> {
        self.rrsets.iter().find(|s| s.rtype == t)
    }
}

/// A loaded, checked zone.
#[derive(Debug)]
pub struct Zone {
    /// The apex, lowercased.
    pub origin: Name,
    /// Lookup form of the apex.
    pub apex: LowerName,
    /// Where it was loaded from.
    pub file: PathBuf,
    /// Names with data.
    nodes: HashMap<LowerName, Node>,
    /// Names without data that have descendants with data (RFC 8020: they exist).
    ents: HashSet<LowerName>,
    /// Delegation points: names below the apex with NS records.
    cuts: HashSet<LowerName>,
    /// The SOA record.
    pub soa: Record,
    /// TTL of negative answers: min(SOA TTL, SOA MINIMUM) (RFC 2308 §5).
    pub negative_ttl: u32,
}

impl Zone {
    /// Checks `records` and builds the zone `origin`.
    pub fn build(
        origin: &Name,
        file: &Path,
        records: Vec<SourceRecord>,
    ) -> Result<Self, ZoneError> {
        let origin = origin.to_lowercase();
        let apex = LowerName::new(&origin);
        let zerr = |file: &Arc<PathBuf>, line: usize, field: &str, message: String| ZoneError {
            file: file.as_ref().clone(),
            line,
            field: field.into(),
            message,
        };
        let mut nodes: HashMap<LowerName, Node> = HashMap::new();
        // Where each (name, type) was first seen, for messages about it: the file, the line and
        // the owner as written (not the whole record: this map holds an entry per RRset).
        let mut first_seen: HashMap<(LowerName, RecordType), (Arc<PathBuf>, usize, Name)> =
            HashMap::new();
        let mut soa = None;

        for src in records {
            let r = &src.record;
            let owner = LowerName::new(&r.name);
            if !apex.zone_of(&owner) {
                return Err(zerr(
                    &src.file,
                    src.line,
                    "owner",
                    format!("{} is outside the zone {origin}", r.name),
                ));
            }
            let rtype = r.record_type();
            if rtype == RecordType::SOA {
                if owner != apex {
                    return Err(zerr(
                        &src.file,
                        src.line,
                        "owner",
                        format!("SOA at {} is not at the apex {origin}", r.name),
                    ));
                }
                if soa.is_some() {
                    return Err(zerr(
                        &src.file,
                        src.line,
                        "type",
                        "a second SOA record".into(),
                    ));
                }
                soa = Some(r.clone());
            }
            let node = nodes.entry(owner.clone()).or_default();
            if let Some(set) = node.rrsets.iter_mut().find(|s| s.rtype == rtype) {
                if rtype == RecordType::CNAME {
                    return Err(zerr(
                        &src.file,
                        src.line,
                        "type",
                        format!("a second CNAME at {}", r.name),
                    ));
                }
                if set.ttl != r.ttl {
                    tracing::warn!(
                        "{}:{}: TTL {} differs from {} of the {rtype} RRset at {}; using {}",
                        src.file.display(),
                        src.line,
                        r.ttl,
                        set.ttl,
                        r.name,
                        set.ttl
                    );
                }
                if !set.rdatas.contains(&r.data) {
                    set.rdatas.push(r.data.clone());
                }
            } else {
                node.rrsets.push(RRset {
                    rtype,
                    ttl: r.ttl,
                    rdatas: vec![r.data.clone()],
                });
                first_seen.insert((owner, rtype), (src.file, src.line, src.record.name));
            }
        }

        // RRsets of a node in type order: ANY answers the first one (as Knot does), whatever
        // order the file listed them in.
        for node in nodes.values_mut() {
            node.rrsets.sort_by_key(|set| u16::from(set.rtype));
        }

        let Some(soa) = soa else {
            return Err(ZoneError {
                file: file.to_path_buf(),
                line: 0,
                field: "zone".into(),
                message: format!("no SOA record at the apex {origin}"),
            });
        };
        let RData::SOA(soa_data) = &soa.data else {
            unreachable!("SOA record holds SOA data")
        };
        let negative_ttl = soa.ttl.min(soa_data.minimum);
        if nodes
            .get(&apex)
            .and_then(|n| n.get(RecordType::NS))
            .is_none()
        {
            let (file, line, _) = &first_seen[&(apex.clone(), RecordType::SOA)];
            return Err(zerr(
                file,
                *line,
                "zone",
                format!("no NS records at the apex {origin}"),
            ));
        }

        // CNAME and other data do not mix (RFC 1034 §3.6.2; RFC 2181 §10.1).
        for (name, node) in &nodes {
            if node.get(RecordType::CNAME).is_some() && node.rrsets.len() > 1 {
                let (file, line, owner) = &first_seen[&(name.clone(), RecordType::CNAME)];
                let other = node
                    .rrsets
                    .iter()
                    .find(|s| s.rtype != RecordType::CNAME)
                    .expect("len > 1");
                let other_line = first_seen[&(name.clone(), other.rtype)].1;
                return Err(zerr(
                    file,
                    *line,
                    "type",
                    format!(
                        "CNAME at {owner} beside other data ({} at line {other_line})",
                        other.rtype
                    ),
                ));
            }
        }

        let cuts: HashSet<LowerName> = nodes
            .iter()
            .filter(|(n, node)| **n != apex && node.get(RecordType::NS).is_some())
            .map(|(n, _)| n.clone())
            .collect();

        // In-zone name servers need addresses, or nobody can reach them (glue below a cut).
        for (name, node) in &nodes {
            let Some(ns) = node.get(RecordType::NS) else {
                continue;
            };
            for d in &ns.rdatas {
                let RData::NS(target) = d else { continue };
                let t = LowerName::new(&target.0);
                if !apex.zone_of(&t) {
                    continue;
                }
                let has_addr = nodes.get(&t).is_some_and(|n| {
                    n.get(RecordType::A).is_some() || n.get(RecordType::AAAA).is_some()
                });
                if !has_addr {
                    let (file, line, owner) = &first_seen[&(name.clone(), RecordType::NS)];
                    let what = if *name == apex {
                        "address records"
                    } else {
                        "glue"
                    };
                    return Err(zerr(
                        file,
                        *line,
                        "rdata",
                        format!(
                            "{what} missing: NS target {} of {owner} has no A or AAAA in the zone",
                            target.0
                        ),
                    ));
                }
            }
        }

        let mut ents = HashSet::new();
        for name in nodes.keys() {
            let mut n = name.base_name();
            while apex.zone_of(&n) && n != apex {
                if nodes.contains_key(&n) || !ents.insert(n.clone()) {
                    break;
                }
                n = n.base_name();
            }
        }

        Ok(Self {
            origin,
            apex,
            file: file.to_path_buf(),
            nodes,
            ents,
            cuts,
            soa,
            negative_ttl,
        })
    }

    /// Reads and builds the zone `origin` from `file`.
    pub fn load(origin: &Name, file: &Path) -> Result<Self, ZoneError> {
        Self::load_named_at(origin, file, NamedAt::itself(file))
    }

    /// Reads and builds the zone `origin` from `file`, named at `at` (the configuration's
    /// `file` key), where errors about the file as a whole point.
    pub fn load_named_at(origin: &Name, file: &Path, at: NamedAt<'_>) -> Result<Self, ZoneError> {
        let records = read_file_named_at(file, origin, at)?;
        Self::build(origin, file, records)
    }

    /// Makes `name` the node of a steered name: it exists whatever else the zone holds there
    /// (other types get the zone's data or NODATA, wildcards do not apply to it) and its
    /// parents are empty non-terminals if nothing else is there. `name` must lie in the zone,
    /// not at or below a delegation, and hold no A, AAAA or CNAME records of the zone's own.
    pub fn add_steered(&mut self, name: &LowerName) -> Result<(), String> {
        if !self.apex.zone_of(name) {
            return Err(format!("{name} is not in zone {}", self.origin));
        }
        if let Some(cut) = self.cut_above(name) {
            return Err(format!(
                "{name} is at or below the delegation at {cut}: zone {} is not authoritative there",
                self.origin
            ));
        }
        if let Some(node) = self.nodes.get(name) {
            for t in [RecordType::A, RecordType::AAAA, RecordType::CNAME] {
                if node.get(t).is_some() {
                    return Err(format!(
                        "zone {} ({}) has {t} records at {name}: a steered name's addresses come \
                         from its pools (remove them from the zone)",
                        self.origin,
                        self.file.display()
                    ));
                }
            }
        }
        self.ents.remove(name);
        self.nodes.entry(name.clone()).or_default();
        let mut n = name.base_name();
        while self.apex.zone_of(&n) && n != self.apex {
            if self.nodes.contains_key(&n) || !self.ents.insert(n.clone()) {
                break;
            }
            n = n.base_name();
        }
        Ok(())
    }

    /// The data at `name`.
    #[must_use]
    pub fn node(&self, name: &LowerName) -> Option<&Node> {
        self.nodes.get(name)
    }

    /// Whether `name` exists without data (an empty non-terminal).
    #[must_use]
    pub fn is_empty_non_terminal(&self, name: &LowerName) -> bool {
        self.ents.contains(name)
    }

    /// Whether `name` is a delegation point.
    #[must_use]
    pub fn is_cut(&self, name: &LowerName) -> bool {
        self.cuts.contains(name)
    }

    /// The closest delegation point at or above `name` (below the apex), if any.
    #[must_use]
    pub fn cut_above(&self, name: &LowerName) -> Option<LowerName> {
        if self.cuts.is_empty() {
            return None;
        }
        let mut best = None;
        let mut n = name.clone();
        while self.apex.zone_of(&n) && n != self.apex {
            if self.cuts.contains(&n) {
                best = Some(n.clone());
            }
            n = n.base_name();
        }
        best
    }

    /// Every name with data and its node.
    pub fn nodes(&self) -> impl Iterator<Item = (&LowerName, &Node)> {
        self.nodes.iter()
    }

    /// Number of names with data.
    #[must_use]
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the zone has no names (never true for a built zone: the apex has SOA).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }
}

#[cfg(test)]
mod tests;
