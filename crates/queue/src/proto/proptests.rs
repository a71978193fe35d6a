//! Property tests of the frame decoder: whatever a peer sends, in whatever
//! pieces, nothing panics, nothing over the limits is kept, and a complete
//! frame always comes out (or the connection's error).

use proptest::prelude::*;
use qs_testkit::{config, piece_sizes, pieces};

use super::*;
use crate::envelope::Origin;

/// What a connection reads from `input`: the frames, then whether it ended on
/// an error (after which it reads nothing more) or the bytes left buffered.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    frames: Vec<Frame>,
    failed: bool,
    buffered: usize,
}

/// Feeds the pieces as a connection does (every frame taken before the next
/// read, nothing read after an error), checking the decoder's memory.
fn decode_all(input: &[u8], sizes: &[usize], limits: Limits) -> Outcome {
    // A frame not yet complete is smaller than the largest frame allowed.
    let largest = PREFIX_LEN + limits.max_header as usize + limits.max_body as usize;
    let mut decoder = FrameDecoder::new(limits);
    let mut frames = Vec::new();
    for piece in pieces(input, sizes) {
        decoder.feed(piece);
        assert!(decoder.buffered() < largest + piece.len());
        loop {
            match decoder.next_frame() {
                Ok(Some(frame)) => {
                    assert!(frame.header.len() <= limits.max_header as usize);
                    assert!(frame.body.len() <= limits.max_body as usize);
                    // A header of any bytes is a request, a response or an error.
                    let _ = decode_request(frame.clone());
                    let _ = decode_response(frame.clone());
                    frames.push(frame);
                }
                Ok(None) => break,
                Err(_) => {
                    // The connection is dropped: what it still held depends
                    // only on how the last read was cut.
                    return Outcome {
                        frames,
                        failed: true,
                        buffered: 0,
                    };
                }
            }
        }
        assert!(decoder.buffered() < largest, "a whole frame was left in");
    }
    Outcome {
        frames,
        failed: false,
        buffered: decoder.buffered(),
    }
}

/// Small limits, so that random lengths hit them, or the real ones.
fn limits() -> impl Strategy<Value = Limits> {
    prop_oneof![
        (0u32..300, 0u32..600).prop_map(|(max_header, max_body)| Limits {
            max_header,
            max_body
        }),
        Just(Limits::default()),
    ]
}

/// Text with the characters JSON must escape.
fn text() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            any::<char>(),
            prop::sample::select(vec!['"', '\\', '\n', '\0', '/', 'a'])
        ],
        0..12,
    )
    .prop_map(|chars| chars.into_iter().collect())
}

/// Requests of every shape a module sends.
fn request() -> impl Strategy<Value = Request> {
    prop_oneof![
        Just(Request::Ping),
        Just(Request::Stats),
        text().prop_map(|s| Request::Hello {
            secret: Secret::new(s)
        }),
        (text(), prop::collection::vec(text(), 0..4), text()).prop_map(
            |(sender, recipients, key)| Request::Enqueue {
                sender,
                recipients,
                origin: Origin::default(),
                request_key: Some(key),
            }
        ),
        any::<u32>().prop_map(|limit| Request::List { limit }),
        (text(), text()).prop_map(|(namespace, key)| Request::StatePut { namespace, key }),
        (text(), text(), any::<u32>()).prop_map(|(namespace, prefix, limit)| {
            Request::StateScan {
                namespace,
                prefix,
                after: None,
                limit,
            }
        }),
    ]
}

/// A stream of well-formed request frames with their bodies.
fn frames() -> impl Strategy<Value = Vec<(Request, Vec<u8>)>> {
    prop::collection::vec(
        (request(), prop::collection::vec(any::<u8>(), 0..300)),
        0..6,
    )
}

fn encoded(frames: &[(Request, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (request, body) in frames {
        match encode_request(request, body, &Limits::default()) {
            Ok(bytes) => out.extend_from_slice(&bytes),
            Err(e) => panic!("{} did not encode: {e}", request.op()),
        }
    }
    out
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn random_bytes_in_any_pieces_decode_as_in_one_piece(
        input in prop::collection::vec(any::<u8>(), 0..3000),
        sizes in piece_sizes(2000),
        limits in limits(),
    ) {
        let whole = decode_all(&input, &[input.len().max(1)], limits);
        prop_assert_eq!(decode_all(&input, &sizes, limits), whole);
    }

    #[test]
    fn frames_in_any_pieces_come_out_whole_and_in_order(
        frames in frames(),
        sizes in piece_sizes(2000),
    ) {
        let input = encoded(&frames);
        let outcome = decode_all(&input, &sizes, Limits::default());
        // Nothing is left waiting: every complete frame came out.
        prop_assert!(!outcome.failed);
        prop_assert_eq!(outcome.buffered, 0);
        prop_assert_eq!(outcome.frames.len(), frames.len());
        for (frame, (request, body)) in outcome.frames.into_iter().zip(frames) {
            let decoded = decode_request(frame);
            prop_assert!(matches!(&decoded, Ok((r, b)) if *r == request && *b == body));
        }
    }

    #[test]
    fn damaged_and_cut_frames_end_in_frames_need_more_or_an_error(
        frames in frames(),
        damage in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
        cut in any::<prop::sample::Index>(),
        sizes in piece_sizes(2000),
        limits in limits(),
    ) {
        let mut input = encoded(&frames);
        for (at, byte) in damage {
            if !input.is_empty() {
                let i = at.index(input.len());
                input[i] = byte;
            }
        }
        input.truncate(cut.index(input.len() + 1));
        let whole = decode_all(&input, &[input.len().max(1)], limits);
        let outcome = decode_all(&input, &sizes, limits);
        prop_assert_eq!(&outcome, &whole);
        // What is left is less than one frame, or the error stopped the reading.
        if !outcome.failed {
            let taken: usize = outcome
                .frames
                .iter()
                .map(|f| PREFIX_LEN + f.header.len() + f.body.len())
                .sum();
            prop_assert_eq!(taken + outcome.buffered, input.len());
        }
    }
}
