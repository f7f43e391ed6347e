//! The request peek and rewrite: any body peeks to a result or an error;
//! a rewritten body peeks again, with the new model and usage asked for.
#![no_main]

use _core::request::{peek, rewrite};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(info) = peek(data) else {
        return;
    };
    let inject = info.stream && !info.include_usage;
    let Some(out) = rewrite(data, &info, Some("fuzz-model"), inject) else {
        return;
    };
    let again = match peek(&out) {
        Ok(again) => again,
        Err(e) => panic!("a rewritten body no longer parses: {e}"),
    };
    if info.model.is_some() {
        assert_eq!(again.model.as_deref(), Some("fuzz-model"));
    }
    assert_eq!(again.stream, info.stream);
    if inject {
        assert!(again.include_usage, "usage was not asked for");
    }
});
