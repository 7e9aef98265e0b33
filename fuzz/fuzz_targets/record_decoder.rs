//! Arbitrary payloads through every record decoder.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let kind = u16::from_le_bytes([data[0], data[1]]) % 10;
    let _ = trajdb::fuzz_decode_record(kind, &data[2..]);
});
