//! Arbitrary checkpoint files through the checkpoint decoder. With the first byte odd, the
//! body length and both checksums are fixed up so the body's decoding is reached; with bit
//! 2 set, the input is laid over a valid checkpoint of a small database (so mutations of
//! real counts and records are tried).
#![no_main]

mod shared;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((mode, rest)) = data.split_first() else {
        return;
    };
    let mut file = if mode & 2 == 2 {
        let mut valid = shared::seed_db()
            .iter()
            .find(|(n, _)| n == "checkpoint")
            .map(|(_, b)| b.clone())
            .unwrap_or_default();
        for (i, b) in rest.iter().enumerate() {
            // Pairs of (position, xor) over the valid file.
            if i % 2 == 1 && !valid.is_empty() {
                let at = usize::from(rest[i - 1]) * 7 % valid.len();
                valid[at] ^= b;
            }
        }
        valid
    } else {
        rest.to_vec()
    };
    if mode & 1 == 1 && file.len() >= 96 {
        let body_len = (file.len() - 96) as u64;
        file[64..72].copy_from_slice(&body_len.to_le_bytes());
        let body_crc = crc32fast::hash(&file[96..]);
        file[60..64].copy_from_slice(&body_crc.to_le_bytes());
        let crc = crc32fast::hash(&file[..92]);
        file[92..96].copy_from_slice(&crc.to_le_bytes());
    }
    let _ = trajdb::fuzz_decode_checkpoint(&file);
});
