//! The message bytes as they go on the wire: the CRLF check that every queued
//! message must pass, the 8-bit test, and the payload handed to the SMTP
//! client. No I/O here.
//!
//! Ingress (smtp-server, the drop folder, pop-client) turns every line end
//! into CRLF, so a bare CR or LF here means a bug or a damaged queue. Such a
//! message is never sent: a bare LF is read as a line end by some servers and
//! not by others (SMTP smuggling), and lettre 0.11.23 does not dot-stuff a
//! line that follows a bare LF.

use std::fmt;

/// Where a message breaks the CRLF rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineEndError {
    /// A CR not followed by LF, at this byte offset.
    BareCr(usize),
    /// An LF not preceded by CR, at this byte offset.
    BareLf(usize),
}

impl fmt::Display for LineEndError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LineEndError::BareCr(at) => write!(f, "a bare CR at byte {at}"),
            LineEndError::BareLf(at) => write!(f, "a bare LF at byte {at}"),
        }
    }
}

/// Checks that every CR is followed by LF and every LF preceded by CR.
pub fn check_line_ends(body: &[u8]) -> Result<(), LineEndError> {
    let mut i = 0;
    while i < body.len() {
        match body[i] {
            b'\r' => {
                if body.get(i + 1) != Some(&b'\n') {
                    return Err(LineEndError::BareCr(i));
                }
                i += 2;
            }
            b'\n' => return Err(LineEndError::BareLf(i)),
            _ => i += 1,
        }
    }
    Ok(())
}

/// True when the message has a byte outside US-ASCII (it needs 8BITMIME).
pub fn is_8bit(body: &[u8]) -> bool {
    !body.is_ascii()
}

/// The bytes to hand to lettre's `message`: it sends them dot-stuffed and then
/// `CRLF . CRLF`, so the final CRLF of the message is left out here (else the
/// far end would receive one more, empty, line).
pub fn data_payload(body: &[u8]) -> &[u8] {
    body.strip_suffix(b"\r\n").unwrap_or(body)
}

/// What goes on the wire after `354` for a message that passed
/// [`check_line_ends`]: every line starting with `.` gets one more, and the
/// data ends with `CRLF . CRLF` (RFC 5321 §4.5.2). For tests and fixtures: the
/// relay itself lets lettre do the stuffing.
pub fn wire_data(body: &[u8]) -> Vec<u8> {
    let payload = data_payload(body);
    let mut out = Vec::with_capacity(payload.len() + payload.len() / 64 + 5);
    let mut line_start = true;
    for &b in payload {
        if line_start && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
        line_start = b == b'\n';
    }
    out.extend_from_slice(b"\r\n.\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crlf_only_messages_pass() {
        assert_eq!(check_line_ends(b""), Ok(()));
        assert_eq!(check_line_ends(b"a\r\nb\r\n\r\n.\r\n"), Ok(()));
        assert_eq!(check_line_ends(b"no line end at all"), Ok(()));
    }

    #[test]
    fn bare_cr_and_lf_are_found_with_their_offset() {
        assert_eq!(check_line_ends(b"ab\ncd\r\n"), Err(LineEndError::BareLf(2)));
        assert_eq!(check_line_ends(b"ab\r\ncd\r"), Err(LineEndError::BareCr(6)));
        assert_eq!(check_line_ends(b"a\rb\r\n"), Err(LineEndError::BareCr(1)));
        assert_eq!(check_line_ends(b"\n"), Err(LineEndError::BareLf(0)));
        // CR CR LF: the first CR is bare.
        assert_eq!(check_line_ends(b"a\r\r\n"), Err(LineEndError::BareCr(1)));
        assert_eq!(LineEndError::BareLf(7).to_string(), "a bare LF at byte 7");
    }

    #[test]
    fn eight_bit_bytes_are_noticed() {
        assert!(!is_8bit(b"plain ASCII\r\n"));
        assert!(is_8bit("\u{e9}t\u{e9}\r\n".as_bytes()));
    }

    #[test]
    fn the_payload_loses_only_the_final_crlf() {
        assert_eq!(data_payload(b"a\r\nb\r\n"), b"a\r\nb");
        assert_eq!(data_payload(b"a\r\nb"), b"a\r\nb");
        assert_eq!(data_payload(b"a\r\n\r\n"), b"a\r\n");
    }

    #[test]
    fn dot_lines_are_stuffed_on_the_wire() {
        assert_eq!(
            wire_data(b".\r\n..\r\na.b\r\n.x\r\n"),
            b"..\r\n...\r\na.b\r\n..x\r\n.\r\n"
        );
        assert_eq!(
            wire_data(b"last line has no CRLF"),
            b"last line has no CRLF\r\n.\r\n"
        );
    }
}
