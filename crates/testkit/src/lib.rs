//! qs-testkit — what the property tests of every parser share.
//!
//! # Description
//! Each sans-IO parser (SMTP commands and bodies, the IMAP input guard, POP3
//! commands and replies, the queue's frames) is tested the same way: arbitrary
//! and shaped bytes, cut into arbitrary pieces, must never panic, must keep
//! bounded memory, and must end the same as when fed whole. This crate holds
//! the parts of those tests that do not depend on the protocol: a bounded
//! [`config`], the cutting into [`pieces`], the [`piece_sizes`] to cut with,
//! and [`mutated`] inputs. It is a dev-dependency only; nothing ships it.

use proptest::prelude::*;

/// 256 cases, and no failure files written into the source tree.
pub fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Cuts `input` into pieces whose sizes cycle through `sizes` (zeros are
/// taken as one).
pub fn pieces<'a>(input: &'a [u8], sizes: &[usize]) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    let mut rest = input;
    for &size in sizes.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (piece, tail) = rest.split_at(size.clamp(1, rest.len()));
        out.push(piece);
        rest = tail;
    }
    out
}

/// Sizes of the reads an input arrives in: tiny, small, and up to `largest`.
pub fn piece_sizes(largest: usize) -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(prop_oneof![1..4usize, 1..64usize, 1..largest.max(2)], 1..8)
}

/// `input` with up to `max_edits` bytes inserted, changed or removed.
pub fn mutated(
    input: impl Strategy<Value = Vec<u8>>,
    max_edits: usize,
) -> impl Strategy<Value = Vec<u8>> {
    let edit = (any::<prop::sample::Index>(), any::<u8>(), 0..3u8);
    (input, prop::collection::vec(edit, 0..=max_edits)).prop_map(|(mut bytes, edits)| {
        for (at, byte, kind) in edits {
            let i = at.index(bytes.len() + 1);
            match kind {
                0 => bytes.insert(i, byte),
                1 if i < bytes.len() => bytes[i] = byte,
                _ if i < bytes.len() => {
                    bytes.remove(i);
                }
                _ => {}
            }
        }
        bytes
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_cover_the_input_in_order() {
        let input = b"abcdefghij";
        let cut = pieces(input, &[3, 0, 2]);
        assert_eq!(cut, vec![&b"abc"[..], b"d", b"ef", b"ghi", b"j"]);
        assert!(pieces(b"", &[1]).is_empty());
    }

    proptest! {
        #![proptest_config(config())]
        #[test]
        fn any_sizes_give_back_the_input(
            input in prop::collection::vec(any::<u8>(), 0..200),
            sizes in piece_sizes(50),
        ) {
            prop_assert_eq!(pieces(&input, &sizes).concat(), input);
        }

        #[test]
        fn mutations_stay_near_the_input(
            line in mutated(Just(b"A1 NOOP".to_vec()), 3),
        ) {
            prop_assert!(line.len() >= 4 && line.len() <= 10);
        }
    }
}
