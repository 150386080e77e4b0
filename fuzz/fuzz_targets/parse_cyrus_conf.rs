//! Fuzz target: the cyrus.conf parser must never panic, and every diagnostic must render.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringmaster_core::{parse_cyrus_conf, render, ParseEnv};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (_, diags) = parse_cyrus_conf("fuzz.conf", &text, &ParseEnv::default());
    for d in &diags {
        let _ = render(d);
    }
});
