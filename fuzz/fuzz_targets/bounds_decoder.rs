//! Arbitrary search-bounds files (`quant-N.idx`, `bounds-N.idx`) through their decoder.
//! With the first byte odd, the body length and both checksums are fixed up so the body's
//! decoding is reached; with bit 2 set, the input is laid as (position, xor) pairs over a
//! valid step-bounds file of a small database (so mutations of real counts are tried).
#![no_main]

mod shared;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((mode, rest)) = data.split_first() else {
        return;
    };
    let mut file = if mode & 2 == 2 {
        let mut valid = shared::seed_bounds();
        for (i, b) in rest.iter().enumerate() {
            if i % 2 == 1 && !valid.is_empty() {
                let at = usize::from(rest[i - 1]) * 13 % valid.len();
                valid[at] ^= b;
            }
        }
        valid
    } else {
        rest.to_vec()
    };
    if mode & 1 == 1 && file.len() >= 64 {
        let body_len = (file.len() - 64) as u64;
        file[48..56].copy_from_slice(&body_len.to_le_bytes());
        let body_crc = crc32fast::hash(&file[64..]);
        file[56..60].copy_from_slice(&body_crc.to_le_bytes());
        let crc = crc32fast::hash(&file[..60]);
        file[60..64].copy_from_slice(&crc.to_le_bytes());
    }
    let _ = trajdb::fuzz_decode_bounds(&file);
});
