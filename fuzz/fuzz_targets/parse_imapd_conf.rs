//! Fuzz target: the imapd.conf reader must never panic, and every diagnostic must render.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringmaster_core::{parse_imapd_conf, render};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (_, diags) = parse_imapd_conf("imapd.conf", &text);
    for d in &diags {
        let _ = render(d);
    }
});
