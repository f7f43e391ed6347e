//! The SSE framer: for any bytes and any split, the segments put back
//! together are the input, and the events are the same as for one feed.
#![no_main]

use _core::sse::{Framer, Segment, data_lines};
use libfuzzer_sys::fuzz_target;

/// Events of `data` fed in pieces of `step` bytes, a trailing LF joined to
/// the event its CR ended, and the unterminated rest.
fn frame(data: &[u8], step: usize) -> (Vec<Vec<u8>>, Vec<u8>) {
    let mut framer = Framer::new();
    let mut events: Vec<Vec<u8>> = Vec::new();
    for piece in data.chunks(step) {
        framer.feed(piece, |seg| match seg {
            Segment::Event(raw) => {
                assert!(
                    data_lines(raw)
                        .iter()
                        .all(|(s, e)| s <= e && *e <= raw.len())
                );
                events.push(raw.to_vec());
            }
            Segment::TrailingLf => match events.last_mut() {
                Some(last) => last.push(b'\n'),
                None => panic!("a trailing LF before any event"),
            },
        });
    }
    (events, framer.finish())
}

fuzz_target!(|data: &[u8]| {
    let Some((&split, rest)) = data.split_first() else {
        return;
    };
    let whole = frame(rest, rest.len().max(1));
    let pieces = frame(rest, usize::from(split % 16) + 1);
    let joined: Vec<u8> = pieces
        .0
        .concat()
        .into_iter()
        .chain(pieces.1.iter().copied())
        .collect();
    assert_eq!(joined, rest, "segments do not add up to the input");
    assert_eq!(whole, pieces, "the split changed the events");
});
