//! The messages a run sends: plain text of a chosen size, CRLF line ends only
//! (lettre must never see a bare CR or LF), distinct senders and subjects so
//! that SEARCH has something to find, and a run marker in each Message-ID so
//! that a run can find its own messages again.

/// A line of filler text, 74 characters and CRLF.
const FILLER: &str =
    "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789ab\r\n";

/// A marker unique to this run (the process id and the time).
pub fn run_marker() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("qs-bench.{}.{nanos:x}", std::process::id())
}

/// Message number `n` of run `marker` from `from` to `to`, at least `size`
/// bytes, ending in CRLF.
pub fn build(marker: &str, n: u64, from: &str, to: &str, size: usize) -> Vec<u8> {
    let mut out = format!(
        "From: Sender {n} <{from}>\r\nTo: <{to}>\r\nSubject: Message number {n} about the project\r\n\
         Date: Tue, 1 Jul 2025 10:{:02}:00 +0000\r\nMessage-ID: <{n}.{marker}@qs-bench.invalid>\r\n\
         MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n",
        n % 60
    )
    .into_bytes();
    while out.len() < size {
        out.extend_from_slice(FILLER.as_bytes());
    }
    out
}

/// Whether `bytes` is a message of run `marker`.
pub fn is_from_run(bytes: &[u8], marker: &str) -> bool {
    let needle = format!(".{marker}@qs-bench.invalid>");
    bytes.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// The DATA of an SMTP transaction in one piece: dot-stuffed, ending with
/// the final dot. Sent as one write, so that the final dot never waits in a
/// second small segment for the server's delayed ACK (Nagle's algorithm).
pub fn smtp_data(message: &[u8]) -> String {
    let text = String::from_utf8_lossy(message);
    let mut out = String::with_capacity(message.len() + 8);
    for line in text.split_inclusive("\r\n") {
        if line.starts_with('.') {
            out.push('.');
        }
        out.push_str(line);
    }
    if !out.is_empty() && !out.ends_with("\r\n") {
        out.push_str("\r\n");
    }
    out.push_str(".\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_have_the_size_asked_for_and_only_crlf() {
        for size in [0, 100, 4096, 10_000] {
            let m = build("run", 7, "a@b.example", "c@d.example", size);
            assert!(m.len() >= size && m.len() < size.max(400) + FILLER.len());
            assert!(m.ends_with(b"\r\n"));
            for (i, &b) in m.iter().enumerate() {
                if b == b'\n' {
                    assert_eq!(m[i - 1], b'\r', "bare LF at {i}");
                }
                if b == b'\r' {
                    assert_eq!(m[i + 1], b'\n', "bare CR at {i}");
                }
            }
        }
    }

    #[test]
    fn smtp_data_is_dot_stuffed_and_ends_with_the_dot() {
        assert_eq!(smtp_data(b"a\r\n.b\r\n..\r\n"), "a\r\n..b\r\n...\r\n.\r\n");
        assert_eq!(smtp_data(b"no end"), "no end\r\n.\r\n");
        assert_eq!(smtp_data(b""), ".\r\n");
        let m = build("run", 1, "a@b.example", "c@d.example", 4096);
        let data = smtp_data(&m);
        assert_eq!(data.len(), m.len() + 3);
        assert!(data.ends_with("\r\n.\r\n"));
    }

    #[test]
    fn a_run_knows_its_own_messages() {
        let marker = run_marker();
        let m = build(&marker, 3, "a@b.example", "c@d.example", 100);
        assert!(is_from_run(&m, &marker));
        assert!(!is_from_run(&m, "qs-bench.1.2"));
        assert_ne!(run_marker(), marker);
    }
}
