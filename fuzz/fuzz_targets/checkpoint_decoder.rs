//! Arbitrary checkpoint files through the checkpoint decoder. With the first byte odd, the
//! body length, the block table and the header checksum are fixed up so the body's
//! decoding is reached; with bit
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
    if mode & 1 == 1 {
        // The valid file's own block table is dropped before the body's is recomputed.
        trajdb::fuzz_fix_checkpoint(&mut file, mode & 2 == 2);
    }
    let _ = trajdb::fuzz_decode_checkpoint(&file);
});
