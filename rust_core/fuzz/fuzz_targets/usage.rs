//! Usage extraction: a JSON body and an SSE stream through the tap, any
//! bytes and any split; usage that comes out is within the sanity bound,
//! and a pass-through tap never changes a byte.
#![no_main]

use _core::usage::{MAX_TOKENS, StreamTap, Usage, body_usage};
use libfuzzer_sys::fuzz_target;

fn check(u: Option<Usage>) {
    if let Some(u) = u {
        for v in [u.prompt_tokens, u.completion_tokens].into_iter().flatten() {
            assert!(v <= MAX_TOKENS);
        }
        assert!(u.cached() <= MAX_TOKENS);
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    check(body_usage(rest));
    let step = usize::from(flags >> 1) + 1;
    let mut tap = StreamTap::new(flags & 1 != 0);
    let mut out = Vec::new();
    for piece in rest.chunks(step) {
        match tap.feed(piece) {
            None => out.extend_from_slice(piece),
            Some(v) => out.extend_from_slice(&v),
        }
    }
    out.extend_from_slice(&tap.finish());
    check(tap.usage);
    if flags & 1 == 0 {
        assert_eq!(out, rest, "a pass-through tap changed the stream");
    } else {
        assert!(out.len() <= rest.len() + 1, "stripping grew the stream");
    }
});
