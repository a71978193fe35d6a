//! Writing the IMAP data that FETCH returns: strings (quoted or literal), lists, dates.
//! FETCH responses are written here directly, so that message bytes go out without
//! copies and parsed envelopes can be cached as ready bytes; every other response is
//! encoded by imap-codec.

use chrono::{DateTime, Datelike, Timelike, Utc};

/// Strings longer than this go out as literals even when they could be quoted.
const MAX_QUOTED: usize = 1024;

/// Writes `bytes` as an IMAP string: quoted when it can be, a literal otherwise.
pub fn string(out: &mut Vec<u8>, bytes: &[u8]) {
    let quotable = bytes.len() <= MAX_QUOTED
        && bytes
            .iter()
            .all(|&b| (0x01..=0x7f).contains(&b) && b != b'\r' && b != b'\n');
    if quotable {
        out.push(b'"');
        for &b in bytes {
            if b == b'"' || b == b'\\' {
                out.push(b'\\');
            }
            out.push(b);
        }
        out.push(b'"');
    } else {
        literal(out, bytes);
    }
}

/// Writes `bytes` as a literal.
pub fn literal(out: &mut Vec<u8>, bytes: &[u8]) {
    literal_head(out, bytes.len());
    out.extend_from_slice(bytes);
}

/// Writes the announcement of a literal of `len` bytes; the bytes follow.
pub fn literal_head(out: &mut Vec<u8>, len: usize) {
    out.push(b'{');
    number(out, len as u64);
    out.extend_from_slice(b"}\r\n");
}

/// Writes an nstring: `NIL` or a string.
pub fn nstring(out: &mut Vec<u8>, bytes: Option<&[u8]>) {
    match bytes {
        Some(b) => string(out, b),
        None => out.extend_from_slice(b"NIL"),
    }
}

/// Writes a number.
pub fn number(out: &mut Vec<u8>, n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    let mut n = n;
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// Writes a date-time as IMAP does (`"17-Jul-1996 02:44:25 +0000"`), in UTC.
pub fn date_time(out: &mut Vec<u8>, secs: i64) {
    let t: DateTime<Utc> = DateTime::from_timestamp(secs, 0).unwrap_or_default();
    let month = MONTHS[t.month0() as usize];
    let text = format!(
        "\"{:2}-{month}-{:04} {:02}:{:02}:{:02} +0000\"",
        t.day(),
        t.year(),
        t.hour(),
        t.minute(),
        t.second()
    );
    out.extend_from_slice(text.as_bytes());
}

/// The time now, seconds since 1970.
pub fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// The months as IMAP writes them.
pub const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// Encodes a display name or parameter value for a place that wants ASCII: as it is
/// when it is ASCII, else as an RFC 2047 encoded word in UTF-8.
pub fn ascii_or_encoded_word(text: &str) -> std::borrow::Cow<'_, str> {
    use base64::Engine;
    if text.is_ascii() {
        return text.into();
    }
    let encoded = base64::engine::general_purpose::STANDARD.encode(text.as_bytes());
    format!("=?UTF-8?B?{encoded}?=").into()
}

/// A set of disjoint ascending ranges as IMAP writes it: `1:3,5`.
pub fn range_set(ranges: &[(u32, u32)]) -> String {
    let parts: Vec<String> = ranges
        .iter()
        .map(|&(first, last)| {
            if first == last {
                first.to_string()
            } else {
                format!("{first}:{last}")
            }
        })
        .collect();
    parts.join(",")
}

/// A UID set in the shortest form: runs as `a:b`.
pub fn uid_set(uids: &[u32]) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut i = 0;
    while i < uids.len() {
        let start = uids[i];
        let mut end = start;
        while i + 1 < uids.len() && uids[i + 1] == end + 1 {
            i += 1;
            end = uids[i];
        }
        parts.push(if start == end {
            start.to_string()
        } else {
            format!("{start}:{end}")
        });
        i += 1;
    }
    parts.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(bytes: &[u8]) -> String {
        let mut out = Vec::new();
        string(&mut out, bytes);
        String::from_utf8_lossy(&out).into_owned()
    }

    #[test]
    fn strings_are_quoted_or_literal() {
        assert_eq!(s(b"plain"), "\"plain\"");
        assert_eq!(s(b"a \"q\" \\ b"), "\"a \\\"q\\\" \\\\ b\"");
        assert_eq!(s(b""), "\"\"");
        assert_eq!(s(b"two\r\nlines"), "{10}\r\ntwo\r\nlines");
        assert_eq!(s("été".as_bytes()), "{5}\r\nété");
        assert_eq!(s(&[b'x'; 1025]).len(), 1025 + 8);
        let mut out = Vec::new();
        nstring(&mut out, None);
        assert_eq!(out, b"NIL");
    }

    #[test]
    fn dates_and_numbers() {
        let mut out = Vec::new();
        date_time(&mut out, 837_571_465);
        assert_eq!(out, b"\"17-Jul-1996 02:44:25 +0000\"");
        out.clear();
        date_time(&mut out, 0);
        assert_eq!(out, b"\" 1-Jan-1970 00:00:00 +0000\"");
        out.clear();
        number(&mut out, 0);
        number(&mut out, 1234567890123);
        assert_eq!(out, b"01234567890123");
        assert_eq!(ascii_or_encoded_word("Bob"), "Bob");
        assert_eq!(ascii_or_encoded_word("Zoë"), "=?UTF-8?B?Wm/Dqw==?=");
    }

    #[test]
    fn uid_sets_are_compact() {
        assert_eq!(uid_set(&[1, 2, 3, 5, 7, 8]), "1:3,5,7:8");
        assert_eq!(uid_set(&[4]), "4");
        assert_eq!(uid_set(&[]), "");
    }
}
