//! Property tests of the line buffer and the command parser: whatever a client
//! sends, in whatever pieces, nothing panics, the buffer stays within one line
//! plus one read, and every line end yields a line (or its refusal).

use proptest::prelude::*;
use qs_testkit::{config, piece_sizes, pieces};

use super::*;

/// The lines `input` holds, worked out without the buffer: each LF ends a
/// line, which is refused when longer than `max`; a last line without LF that
/// already reached `max` is refused too.
fn expected_lines(input: &[u8], max: usize) -> Vec<Line> {
    let mut lines = Vec::new();
    let mut rest = input;
    while let Some(lf) = rest.iter().position(|&b| b == b'\n') {
        let (line, tail) = rest.split_at(lf + 1);
        if line.len() > max {
            lines.push(Line::TooLong);
        } else {
            let text = &line[..lf];
            lines.push(Line::Complete(
                text.strip_suffix(b"\r").unwrap_or(text).to_vec(),
            ));
        }
        rest = tail;
    }
    if rest.len() >= max {
        lines.push(Line::TooLong);
    }
    lines
}

/// Feeds the pieces as the session does (every line taken before the next
/// read), checking the buffer's size after each step; returns the lines.
fn feed_all(input: &[u8], sizes: &[usize], max: usize) -> Vec<Line> {
    let mut buffer = LineBuffer::new(max);
    let mut lines = Vec::new();
    for piece in pieces(input, sizes) {
        buffer.feed(piece);
        assert!(
            buffer.pending() < max + piece.len(),
            "{} bytes held for lines of {max} and a read of {}",
            buffer.pending(),
            piece.len()
        );
        while let Some(line) = buffer.next_line() {
            if let Line::Complete(text) = &line {
                assert!(text.len() < max, "a line over the limit was taken");
                assert!(!text.contains(&b'\n'));
                // Whatever the line holds, it parses or is refused.
                let _ = parse(text);
            }
            lines.push(line);
        }
        assert!(buffer.pending() < max, "a partial line reached the limit");
    }
    lines
}

/// The line limit: the real one, or small ones so that random input hits it.
fn max_line() -> impl Strategy<Value = usize> {
    prop_oneof![Just(MAX_LINE), 1..64usize]
}

/// A command line as a client writes it, without its line end.
fn command_line() -> impl Strategy<Value = Vec<u8>> {
    let keyword = prop::sample::select(vec![
        "USER", "PASS", "APOP", "AUTH", "CAPA", "STLS", "QUIT", "STAT", "LIST", "RETR", "DELE",
        "NOOP", "RSET", "TOP", "UIDL", "user", "Top", "XTND", "",
    ]);
    let argument = prop_oneof![
        Just(String::new()),
        (0u64..20).prop_map(|n| n.to_string()),
        Just("18446744073709551616".to_string()),
        Just("-1".to_string()),
        Just("PLAIN".to_string()),
        Just("AGFsaWNlAHB3".to_string()),
        Just("=".to_string()),
        Just("alice@example.test".to_string()),
        Just("two words".to_string()),
    ];
    (keyword, prop::collection::vec(argument, 0..4))
        .prop_map(|(keyword, args)| {
            let mut line = keyword.to_string();
            for arg in args {
                line.push(' ');
                line.push_str(&arg);
            }
            line.into_bytes()
        })
        .boxed()
}

/// A command line with some of its bytes changed, inserted or removed.
fn mutated_line() -> impl Strategy<Value = Vec<u8>> {
    qs_testkit::mutated(command_line(), 3)
}

/// A stream built from the pieces that matter: commands, every kind of line
/// end, NULs, and lines around the limit.
fn structured_input() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        4 => command_line().prop_map(|mut l| {
            l.extend_from_slice(b"\r\n");
            l
        }),
        3 => mutated_line(),
        2 => prop::sample::select(vec![
            &b"\r\n"[..], b"\n", b"\r", b"\0", b"\r\r\n", b"\n.\n", b"\r.\r", b".\r\n",
        ])
        .prop_map(<[u8]>::to_vec),
        1 => (MAX_LINE - 4..MAX_LINE + 4).prop_map(|n| vec![b'A'; n]),
        1 => prop::collection::vec(any::<u8>(), 0..40),
    ];
    prop::collection::vec(piece, 0..24).prop_map(|pieces| pieces.concat())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn random_bytes_in_any_pieces_frame_exactly_and_stay_bounded(
        input in prop::collection::vec(any::<u8>(), 0..3000),
        sizes in piece_sizes(5000),
        max in max_line(),
    ) {
        prop_assert_eq!(feed_all(&input, &sizes, max), expected_lines(&input, max));
    }

    #[test]
    fn command_streams_in_any_pieces_frame_exactly_and_stay_bounded(
        input in structured_input(),
        sizes in piece_sizes(5000),
        max in max_line(),
    ) {
        prop_assert_eq!(feed_all(&input, &sizes, max), expected_lines(&input, max));
    }

    #[test]
    fn every_command_line_parses_or_is_refused(line in mutated_line()) {
        // The answer is a command or an error; a panic fails the test.
        let _ = parse(&line);
    }

    #[test]
    fn well_formed_commands_parse(n in 0u64..u64::MAX, lines in 0u64..1000) {
        let retr = parse(format!("RETR {n}").as_bytes());
        prop_assert!(matches!(retr, Ok(Command::Retr(m)) if m == n));
        let dele = parse(format!("dele {n}").as_bytes());
        prop_assert!(matches!(dele, Ok(Command::Dele(m)) if m == n));
        let top = parse(format!("TOP {n} {lines}").as_bytes());
        prop_assert!(matches!(top, Ok(Command::Top(m, l)) if m == n && l == lines));
        let list = parse(format!("LIST {n}").as_bytes());
        prop_assert!(matches!(list, Ok(Command::List(Some(m))) if m == n));
    }
}
