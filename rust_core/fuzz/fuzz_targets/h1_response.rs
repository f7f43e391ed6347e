//! The provider response reader: any bytes, in any split, with a close at
//! the end, must give a phase or an error string, never a panic.
#![no_main]

use _core::h1::ResponseReader;
use _core::protocols::Protocol;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    // The first byte picks the reader's options and where to split the input.
    let strip = flags & 1 != 0;
    let head = flags & 2 != 0;
    let max_buffered = if flags & 4 != 0 { 64 } else { 1 << 16 };
    // A small event cap half the time, so its failure path runs too.
    let max_event = if flags & 8 != 0 { 256 } else { 1 << 16 };
    let protocol = match (flags >> 4) & 3 {
        1 => Protocol::Responses,
        2 => Protocol::Messages,
        _ => Protocol::Chat,
    };
    let step = usize::from(flags >> 6) * 17 + 1;
    let mut reader =
        ResponseReader::create(max_buffered, strip, head, max_event).with_protocol(protocol);
    for piece in rest.chunks(step) {
        if reader.push(piece).is_err() {
            return;
        }
    }
    let _ = reader.close_input();
    let _ = reader.body_complete();
});
