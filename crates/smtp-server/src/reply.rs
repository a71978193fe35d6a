//! SMTP replies as values that write themselves (RFC 5321 §4.2, with the
//! enhanced status codes of RFC 3463 when there is one).

/// One reply, possibly multi-line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    code: u16,
    lines: Vec<String>,
}

impl Reply {
    /// A one-line reply; `enhanced` may be empty.
    pub fn new(code: u16, enhanced: &str, text: &str) -> Reply {
        let line = match (enhanced.is_empty(), text.is_empty()) {
            (true, _) => text.to_string(),
            (false, true) => enhanced.to_string(),
            (false, false) => format!("{enhanced} {text}"),
        };
        Reply {
            code,
            lines: vec![line],
        }
    }

    /// A multi-line reply (EHLO).
    pub fn multiline(code: u16, lines: &[String]) -> Reply {
        Reply {
            code,
            lines: lines.to_vec(),
        }
    }

    /// Whether the code is a temporary (4xx) or permanent (5xx) failure.
    pub fn is_failure(&self) -> bool {
        self.code >= 400
    }

    /// Appends the wire form to `out`.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        let last = self.lines.len().saturating_sub(1);
        for (i, line) in self.lines.iter().enumerate() {
            let sep = if i == last { ' ' } else { '-' };
            // Replies are single lines: drop anything that could break framing.
            let clean: String = line.chars().filter(|c| *c != '\r' && *c != '\n').collect();
            if clean.is_empty() && i == last && self.lines.len() == 1 {
                out.extend_from_slice(format!("{} \r\n", self.code).as_bytes());
            } else {
                out.extend_from_slice(format!("{}{sep}{clean}\r\n", self.code).as_bytes());
            }
        }
    }

    /// The wire form.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write_to(&mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_write_themselves() {
        assert_eq!(
            Reply::new(250, "2.1.0", "OK").to_bytes(),
            b"250 2.1.0 OK\r\n"
        );
        assert_eq!(Reply::new(334, "", "").to_bytes(), b"334 \r\n");
        assert_eq!(
            Reply::multiline(250, &["a".into(), "PIPELINING".into()]).to_bytes(),
            b"250-a\r\n250 PIPELINING\r\n"
        );
        assert_eq!(
            Reply::new(550, "5.1.1", "x\r\ny").to_bytes(),
            b"550 5.1.1 xy\r\n"
        );
    }
}
