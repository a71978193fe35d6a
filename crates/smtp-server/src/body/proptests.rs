//! Property tests of the DATA and BDAT readers: whatever a client sends, in
//! whatever pieces, nothing panics, what is kept never passes the size limit
//! (and what one read brought is all that waits in memory beside the spool),
//! the body ends exactly at the first `<CRLF>.<CRLF>` and nowhere else, and the
//! outcome does not depend on how the bytes were cut.

use std::sync::Arc;

use proptest::prelude::*;
use qs_service::spool::SpoolDir;
use qs_testkit::{config, piece_sizes, pieces};

use super::*;

/// A spool folder of its own, keeping `threshold` octets in memory.
fn spool_dir(threshold: usize) -> (tempfile::TempDir, Arc<SpoolDir>) {
    let tmp = match tempfile::tempdir() {
        Ok(tmp) => tmp,
        Err(e) => panic!("no temporary folder: {e}"),
    };
    match SpoolDir::open(tmp.path().join("spool"), threshold) {
        Ok(dir) => (tmp, dir),
        Err(e) => panic!("no spool folder: {e}"),
    }
}

/// A body's outcome with the spool read back.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Complete(Vec<u8>),
    Refused(Flaw),
}

fn outcome(body: Body) -> Outcome {
    match body {
        Body::Complete(spool) => match spool.to_vec() {
            Ok(bytes) => Outcome::Complete(bytes),
            Err(e) => panic!("the spool cannot be read: {e}"),
        },
        Body::Refused(flaw) => Outcome::Refused(flaw),
    }
}

/// Reads a DATA body from the pieces; returns the outcome and how many input
/// bytes it took, or `None` when it still waits for its end.
fn read_data(
    input: &[u8],
    sizes: &[usize],
    limit: usize,
    dir: &Arc<SpoolDir>,
) -> Option<(Outcome, usize)> {
    let mut reader = DataReader::new(limit, dir.spool());
    let mut offset = 0;
    for piece in pieces(input, sizes) {
        if let Some((body, used)) = reader.feed(piece) {
            assert!(used >= 1 && used <= piece.len());
            return Some((outcome(body), offset + used));
        }
        // Between reads nothing waits outside the spool, which stays within
        // the limit (and in memory only up to the threshold).
        assert!(reader.data.is_empty());
        assert!(reader.spool.len() <= limit as u64);
        assert!(reader.spool.in_file() || reader.spool.len() <= dir.threshold() as u64);
        offset += piece.len();
    }
    None
}

/// Where `<CRLF>.<CRLF>` first ends the body (the CRLF before the dot may be
/// the one that ended the 354 reply, so a body may start with `.<CRLF>`).
fn expected_end(input: &[u8]) -> Option<usize> {
    if input.starts_with(b".\r\n") {
        return Some(3);
    }
    input
        .windows(5)
        .position(|w| w == b"\r\n.\r\n")
        .map(|at| at + 5)
}

/// Bytes that steer the reader: every kind of line end, the ways an end of
/// data is faked (SMTP smuggling), stuffed dots, NULs and long lines.
fn steering_piece() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => prop::sample::select(vec![
            &b"\r\n"[..], b"\n", b"\r", b"\0", b".", b"..", b".\r\n", b"\r\n.\r\n", b"\n.\n",
            b"\r.\r", b"\n.\r\n", b"\r\n.\n", b"\r\n.\r\r\n", b"\r\n..\r\n", b"\r\n.x\r\n",
            b"MAIL FROM:<x@y>\r\n", b"Subject: hi\r\n",
        ])
        .prop_map(<[u8]>::to_vec),
        2 => prop::collection::vec(any::<u8>(), 0..40),
        1 => (MAX_LINE - 4..MAX_LINE + 4).prop_map(|n| vec![b'a'; n]),
    ]
}

fn steered_input() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(steering_piece(), 0..30).prop_map(|p| p.concat())
}

/// Text lines that need no refusal: no CR, LF or NUL, at most 998 octets;
/// some start with dots.
fn text_lines() -> impl Strategy<Value = Vec<Vec<u8>>> {
    let byte = any::<u8>().prop_filter("no line end", |b| !matches!(b, b'\r' | b'\n' | 0));
    let line = (
        prop::sample::select(vec![&b""[..], b".", b"..", b"From "]),
        prop::collection::vec(byte, 0..60),
    )
        .prop_map(|(start, rest)| [start, &rest].concat());
    prop::collection::vec(line, 0..20)
}

/// The size limit: small ones that the input passes, or a large one.
fn limit() -> impl Strategy<Value = usize> {
    prop_oneof![0..400usize, Just(1 << 20)]
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn random_data_ends_exactly_at_crlf_dot_crlf_in_any_pieces(
        input in prop::collection::vec(any::<u8>(), 0..3000),
        sizes in piece_sizes(3000),
        limit in limit(),
        threshold in 0..300usize,
    ) {
        let (_tmp, dir) = spool_dir(threshold);
        let got = read_data(&input, &sizes, limit, &dir);
        prop_assert_eq!(got.as_ref().map(|(_, used)| *used), expected_end(&input));
        prop_assert_eq!(got, read_data(&input, &[input.len().max(1)], limit, &dir));
    }

    #[test]
    fn smuggling_shaped_data_ends_exactly_at_crlf_dot_crlf_in_any_pieces(
        input in steered_input(),
        sizes in piece_sizes(3000),
        limit in limit(),
        threshold in 0..300usize,
    ) {
        let (_tmp, dir) = spool_dir(threshold);
        let got = read_data(&input, &sizes, limit, &dir);
        prop_assert_eq!(got.as_ref().map(|(_, used)| *used), expected_end(&input));
        prop_assert_eq!(&got, &read_data(&input, &[input.len().max(1)], limit, &dir));
        if let Some((body, used)) = got {
            let taken = &input[..used];
            let bare = taken.iter().enumerate().any(|(i, &b)| match b {
                b'\r' => taken.get(i + 1) != Some(&b'\n'),
                b'\n' => i == 0 || taken[i - 1] != b'\r',
                0 => true,
                _ => false,
            });
            if bare {
                // A bare CR or LF or a NUL refuses the body, whatever else.
                prop_assert_eq!(body, Outcome::Refused(Flaw::BadLineEnding));
            } else if let Outcome::Complete(message) = body {
                prop_assert!(message.len() <= limit);
            }
        }
    }

    #[test]
    fn clean_data_comes_back_unstuffed_in_any_pieces(
        lines in text_lines(),
        sizes in piece_sizes(3000),
        threshold in 0..300usize,
    ) {
        let mut input = Vec::new();
        let mut expected = Vec::new();
        for line in &lines {
            if line.starts_with(b".") {
                input.push(b'.');
            }
            input.extend_from_slice(line);
            input.extend_from_slice(b"\r\n");
            expected.extend_from_slice(line);
            expected.extend_from_slice(b"\r\n");
        }
        input.extend_from_slice(b".\r\nQUIT\r\n");
        let (_tmp, dir) = spool_dir(threshold);
        let got = read_data(&input, &sizes, 1 << 20, &dir);
        prop_assert_eq!(got, Some((Outcome::Complete(expected), input.len() - 6)));
    }

    #[test]
    fn chunks_in_any_pieces_are_judged_as_in_one(
        input in prop_oneof![steered_input(), prop::collection::vec(any::<u8>(), 0..3000)],
        sizes in piece_sizes(3000),
        limit in limit(),
        threshold in 0..300usize,
    ) {
        let (_tmp, dir) = spool_dir(threshold);
        let read = |sizes: &[usize]| {
            let mut reader = ChunkReader::new(limit, dir.spool());
            for piece in pieces(&input, sizes) {
                reader.add(piece);
                assert!(reader.spool.len() <= limit as u64);
                assert!(reader.spool.in_file() || reader.spool.len() <= dir.threshold() as u64);
            }
            assert_eq!(reader.size(), input.len());
            outcome(reader.finish())
        };
        let got = read(&sizes);
        prop_assert_eq!(&got, &read(&[input.len().max(1)]));
        if let Outcome::Complete(message) = got {
            prop_assert_eq!(message, input);
        }
    }
}

/// Found by the properties above: a bare CR left the reader at a line start,
/// so `<CRLF><CR>.<CRLF>` ended DATA. The first message was refused, but what
/// followed was read as commands: a second message smuggled past a server
/// that, rightly, saw no end there.
#[test]
fn a_dot_after_a_bare_cr_does_not_end_the_data() {
    let (_tmp, dir) = spool_dir(1 << 20);
    for attack in [
        &b"\r.\r\nMAIL FROM:<x@y>\r\n"[..],
        b"a\r\n\r.\r\nMAIL FROM:<x@y>\r\n",
        b"a\r\r.\r\nMAIL FROM:<x@y>\r\n",
    ] {
        for size in [1, 2, attack.len()] {
            assert_eq!(
                read_data(attack, &[size], 1 << 20, &dir),
                None,
                "{attack:?} in pieces of {size}"
            );
        }
        let mut input = attack.to_vec();
        input.extend_from_slice(b"\r\n.\r\n");
        assert_eq!(
            read_data(&input, &[1], 1 << 20, &dir),
            Some((Outcome::Refused(Flaw::BadLineEnding), input.len()))
        );
    }
}
