//! Arbitrary log headers (first byte odd: the header checksum is fixed up so the fields
//! behind it are reached), followed by the valid frames of a small database.
#![no_main]

mod shared;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((mode, rest)) = data.split_first() else {
        return;
    };
    let valid = &shared::seed_db().iter().find(|(n, _)| n == "log").unwrap().1;
    let mut head = rest.to_vec();
    head.resize(64, 0);
    if mode & 1 == 1 {
        let crc = crc32fast::hash(&head[..60]);
        head[60..64].copy_from_slice(&crc.to_le_bytes());
    }
    let mut log = if mode & 2 == 2 { rest.to_vec() } else { head };
    if mode & 4 == 4 {
        log.extend_from_slice(&valid[64..]);
    }
    shared::exercise(&[("log".to_owned(), log)]);
});
