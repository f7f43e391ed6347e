//! The provider response reader: any bytes, in any split, with a close at
//! the end, must give a phase or an error string, never a panic.
#![no_main]

use _core::h1::ResponseReader;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    // The first byte picks the reader's options and where to split the input.
    let strip = flags & 1 != 0;
    let head = flags & 2 != 0;
    let max_buffered = if flags & 4 != 0 { 64 } else { 1 << 16 };
    let step = usize::from(flags >> 3) + 1;
    let mut reader = ResponseReader::create(max_buffered, strip, head);
    for piece in rest.chunks(step) {
        if reader.push(piece).is_err() {
            return;
        }
    }
    let _ = reader.close_input();
    let _ = reader.body_complete();
});
