//! Property tests of the reply decoder and the login: whatever a server sends,
//! in whatever pieces, nothing panics, the decoder holds at most one status
//! line (and the data at most its limit) plus one read, every complete reply
//! comes out, and no credential leaves before STLS when it is required.

use proptest::prelude::*;
use qs_testkit::{config, piece_sizes, pieces};

use super::*;

/// Status lines as a connection reads them: every one taken before the next
/// read, nothing read after an error.
fn statuses(input: &[u8], sizes: &[usize]) -> Vec<Result<Status, ProtocolError>> {
    let mut decoder = Decoder::new();
    let mut out = Vec::new();
    for piece in pieces(input, sizes) {
        decoder.feed(piece);
        assert!(decoder.buffered() < MAX_STATUS_LINE + piece.len());
        loop {
            match decoder.status() {
                Ok(Some(status)) => out.push(Ok(status)),
                Ok(None) => break,
                Err(e) => {
                    out.push(Err(e));
                    return out;
                }
            }
        }
        assert!(
            decoder.buffered() < MAX_STATUS_LINE,
            "a whole line was left in"
        );
    }
    out
}

/// A status line followed by multi-line data, as the client reads a RETR: the
/// status, the data into a buffer of at most `limit`, then what follows.
#[derive(Debug, PartialEq, Eq)]
struct Retrieval {
    status: Option<Result<Status, ProtocolError>>,
    data: Result<Option<Vec<u8>>, ProtocolError>,
    after: Vec<Result<Status, ProtocolError>>,
}

fn retrieve(input: &[u8], sizes: &[usize], limit: usize) -> Retrieval {
    let mut decoder = Decoder::new();
    let mut status = None;
    let mut data = Vec::new();
    let mut finished = false;
    let mut after = Vec::new();
    for piece in pieces(input, sizes) {
        decoder.feed(piece);
        if status.is_none() {
            match decoder.status() {
                Ok(None) => continue,
                Ok(Some(s)) => status = Some(Ok(s)),
                Err(e) => {
                    status = Some(Err(e));
                    break;
                }
            }
        }
        if !finished {
            match decoder.data(&mut data, limit) {
                Ok(true) => finished = true,
                Ok(false) => {
                    // Undecoded bytes are never kept back while the data goes on.
                    assert_eq!(decoder.buffered(), 0);
                    assert!(data.len() <= limit);
                    continue;
                }
                Err(e) => {
                    assert!(data.len() <= limit + piece.len().max(2));
                    return Retrieval {
                        status,
                        data: Err(e),
                        after,
                    };
                }
            }
        }
        loop {
            match decoder.status() {
                Ok(Some(s)) => after.push(Ok(s)),
                Ok(None) => break,
                Err(e) => {
                    after.push(Err(e));
                    return Retrieval {
                        status,
                        data: Ok(Some(data)),
                        after,
                    };
                }
            }
        }
    }
    Retrieval {
        status,
        data: Ok(finished.then_some(data)),
        after,
    }
}

/// Every line end in `data` is CRLF: no bare CR, no bare LF.
fn only_crlf(data: &[u8]) -> bool {
    data.iter().enumerate().all(|(i, &b)| match b {
        b'\r' => data.get(i + 1) == Some(&b'\n'),
        b'\n' => i > 0 && data[i - 1] == b'\r',
        _ => true,
    })
}

/// Bytes that steer the decoder: line ends of every kind, dots at line
/// starts, the ways a data end is faked, and status words.
fn steering_piece() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => prop::sample::select(vec![
            &b"\r\n"[..], b"\n", b"\r", b"\0", b".", b"..", b".\r\n", b"\r\n.\r\n", b"\n.\n",
            b"\r.\r", b".\r", b".\n", b"\r\n..\r\n", b"+OK ", b"-ERR ", b"+ ", b"+ok",
            b"[IN-USE] ", b"1 120\r\n", b"UIDL\r\n",
        ])
        .prop_map(<[u8]>::to_vec),
        2 => prop::collection::vec(any::<u8>(), 0..30),
        1 => (MAX_STATUS_LINE - 3..MAX_STATUS_LINE + 3).prop_map(|n| vec![b'x'; n]),
    ]
}

fn steered_input() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(steering_piece(), 0..30).prop_map(|p| p.concat())
}

/// Text lines without line ends; some start with dots.
fn text_lines() -> impl Strategy<Value = Vec<Vec<u8>>> {
    let byte = any::<u8>().prop_filter("no line end", |b| *b != b'\r' && *b != b'\n');
    let line = (
        prop::sample::select(vec![&b""[..], b".", b"..", b"From "]),
        prop::collection::vec(byte, 0..40),
    )
        .prop_map(|(start, rest)| [start, &rest].concat());
    prop::collection::vec(line, 0..20)
}

/// A status the login may be given.
fn status() -> impl Strategy<Value = Status> {
    let text = prop::sample::select(vec!["", "ready", "[AUTH] no", "STLS", "SASL PLAIN"])
        .prop_map(String::from);
    prop_oneof![
        text.clone().prop_map(Status::Ok),
        text.clone().prop_map(Status::Err),
        text.prop_map(Status::Continue),
    ]
}

/// CAPA listings that offer or hide STLS and PLAIN.
fn listing() -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec(
        prop::sample::select(vec!["STLS", "SASL PLAIN", "USER", "UIDL", "EXPIRE 0", ""])
            .prop_map(String::from),
        0..4,
    )
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn random_status_bytes_in_any_pieces_decode_as_in_one_piece(
        input in prop::collection::vec(any::<u8>(), 0..6000),
        sizes in piece_sizes(6000),
    ) {
        prop_assert_eq!(statuses(&input, &sizes), statuses(&input, &[input.len().max(1)]));
    }

    #[test]
    fn every_complete_status_line_comes_out(input in steered_input(), sizes in piece_sizes(6000)) {
        let got = statuses(&input, &sizes);
        prop_assert_eq!(&got, &statuses(&input, &[input.len().max(1)]));
        // Every LF ends a reply until the first error ends the connection.
        let line_ends = input.iter().filter(|&&b| b == b'\n').count();
        if !matches!(got.last(), Some(Err(_))) {
            prop_assert_eq!(got.len(), line_ends);
        }
    }

    #[test]
    fn random_data_in_any_pieces_decodes_as_in_one_piece(
        input in steered_input(),
        sizes in piece_sizes(6000),
        limit in prop_oneof![Just(MAX_LISTING), 0..200usize],
    ) {
        let mut wire = b"+OK data follows\r\n".to_vec();
        wire.extend_from_slice(&input);
        let got = retrieve(&wire, &sizes, limit);
        prop_assert_eq!(&got, &retrieve(&wire, &[wire.len()], limit));
        if let Ok(Some(data)) = &got.data {
            prop_assert!(data.len() <= limit);
            prop_assert!(only_crlf(data), "{:?}", String::from_utf8_lossy(data));
        }
    }

    #[test]
    fn stuffed_data_comes_back_whole_whatever_the_pieces(
        lines in text_lines(),
        sizes in piece_sizes(6000),
    ) {
        let mut wire = b"+OK message follows\r\n".to_vec();
        let mut expected = Vec::new();
        for line in &lines {
            if line.starts_with(b".") {
                wire.push(b'.');
            }
            wire.extend_from_slice(line);
            wire.extend_from_slice(b"\r\n");
            expected.extend_from_slice(line);
            expected.extend_from_slice(b"\r\n");
        }
        wire.extend_from_slice(b".\r\n+OK next\r\n");
        let got = retrieve(&wire, &sizes, MAX_LISTING);
        prop_assert_eq!(got.status, Some(Ok(Status::Ok("message follows".into()))));
        prop_assert_eq!(got.data, Ok(Some(expected)));
        prop_assert_eq!(got.after, vec![Ok(Status::Ok("next".into()))]);
    }

    #[test]
    fn listings_of_any_text_parse_or_are_refused(lines in prop::collection::vec(".{0,40}", 0..8)) {
        let _ = parse_list(&lines);
        let _ = parse_uidl(&lines);
        let _ = Capabilities::parse(&lines);
    }

    #[test]
    fn the_login_never_sends_a_credential_before_stls(
        replies in prop::collection::vec((status(), listing()), 1..10),
    ) {
        let mut login = Login::new(TlsMode::StartTls, "alice", Secret::new(b"pw".to_vec()));
        for (status, lines) in replies {
            match login.on_reply(status, &lines) {
                Step::Send(Command::Capa | Command::Stls) => {}
                Step::Send(command) => prop_assert!(false, "{command:?} sent without TLS"),
                Step::LoggedIn(_) => prop_assert!(false, "logged in without TLS"),
                // The caller runs the handshake, or leaves.
                Step::StartTls | Step::Fail(_) => break,
            }
        }
    }
}
