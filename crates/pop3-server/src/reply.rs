//! POP3 replies: values that write themselves, CRLF after every line.

/// An extended response code (RFC 2449 RESP-CODES, RFC 3206).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// `[AUTH]`: the credentials, or the way they were sent, are refused.
    Auth,
    /// `[IN-USE]`: another session holds the maildrop.
    InUse,
    /// `[SYS/TEMP]`: a passing problem on our side; try again later.
    SysTemp,
    /// `[SYS/PERM]`: a lasting problem on our side; retrying will not help.
    SysPerm,
}

impl Code {
    /// The code as it appears between brackets.
    pub fn as_str(self) -> &'static str {
        match self {
            Code::Auth => "AUTH",
            Code::InUse => "IN-USE",
            Code::SysTemp => "SYS/TEMP",
            Code::SysPerm => "SYS/PERM",
        }
    }
}

/// One reply of the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `+OK text`.
    Ok(String),
    /// `-ERR [code] text`.
    Err(Option<Code>, String),
    /// `+OK text`, then lines (dot-stuffed), then `.`.
    Multi(String, Vec<String>),
    /// `+ ` : send the next SASL response.
    Continue,
}

impl Reply {
    /// `+OK text`.
    pub fn ok(text: impl Into<String>) -> Reply {
        Reply::Ok(text.into())
    }

    /// `-ERR text`.
    pub fn err(text: impl Into<String>) -> Reply {
        Reply::Err(None, text.into())
    }

    /// `-ERR [code] text`.
    pub fn err_code(code: Code, text: impl Into<String>) -> Reply {
        Reply::Err(Some(code), text.into())
    }

    /// True for `+OK` and `+ `.
    pub fn is_ok(&self) -> bool {
        !matches!(self, Reply::Err(..))
    }

    /// Appends the reply's bytes to `out`.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        match self {
            Reply::Ok(text) => status(out, "+OK", text),
            Reply::Err(None, text) => status(out, "-ERR", text),
            Reply::Err(Some(code), text) => {
                status(out, &format!("-ERR [{}]", code.as_str()), text);
            }
            Reply::Multi(text, lines) => {
                status(out, "+OK", text);
                for line in lines {
                    if line.starts_with('.') {
                        out.push(b'.');
                    }
                    out.extend_from_slice(clean(line).as_bytes());
                    out.extend_from_slice(b"\r\n");
                }
                out.extend_from_slice(b".\r\n");
            }
            Reply::Continue => out.extend_from_slice(b"+ \r\n"),
        }
    }

    /// The reply as bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write_to(&mut out);
        out
    }
}

fn status(out: &mut Vec<u8>, indicator: &str, text: &str) {
    out.extend_from_slice(indicator.as_bytes());
    if !text.is_empty() {
        out.push(b' ');
        out.extend_from_slice(clean(text).as_bytes());
    }
    out.extend_from_slice(b"\r\n");
}

/// No CR or LF may reach the wire inside a line.
fn clean(text: &str) -> std::borrow::Cow<'_, str> {
    if text.contains(['\r', '\n']) {
        text.replace(['\r', '\n'], " ").into()
    } else {
        text.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_write_themselves() {
        assert_eq!(Reply::ok("fine").to_bytes(), b"+OK fine\r\n");
        assert_eq!(Reply::ok("").to_bytes(), b"+OK\r\n");
        assert_eq!(
            Reply::err_code(Code::InUse, "locked").to_bytes(),
            b"-ERR [IN-USE] locked\r\n"
        );
        assert_eq!(Reply::err("a\r\nb").to_bytes(), b"-ERR a  b\r\n");
        assert_eq!(
            Reply::Multi("list".into(), vec!["1 20".into(), ".odd".into()]).to_bytes(),
            b"+OK list\r\n1 20\r\n..odd\r\n.\r\n"
        );
        assert_eq!(Reply::Continue.to_bytes(), b"+ \r\n");
    }
}
