//! Bytes after a valid log prefix: raw (odd first byte: framed with valid checks as
//! records `kind u16, len u8, payload`), then open, verify and read everything.
#![no_main]

mod shared;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut log = shared::log_prefix();
    match data.split_first() {
        Some((m, rest)) if m & 1 == 1 => {
            let mut seq = 3u64;
            let mut r = rest;
            while r.len() >= 3 {
                let kind = u16::from_le_bytes([r[0], r[1]]) % 9;
                let len = usize::from(r[2]).min(r.len() - 3);
                log.extend_from_slice(&shared::frame(seq, kind, &r[3..3 + len]));
                seq += 1;
                r = &r[3 + len..];
            }
        }
        Some((_, rest)) => log.extend_from_slice(rest),
        None => {}
    }
    shared::exercise(&[("log".to_owned(), log)]);
});
