//! A whole database directory from the input: either edits (`file, offset u16, byte`
//! triples) applied to a small valid database, or raw files (log, keys-0.vec, keys-1.vec)
//! cut from the input at lengths its first bytes give.
#![no_main]

mod shared;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((mode, rest)) = data.split_first() else {
        return;
    };
    let mut files = shared::seed_db().clone();
    if mode & 1 == 1 {
        for e in rest.chunks_exact(4) {
            let n = files.len();
            let f = &mut files[usize::from(e[0]) % n].1;
            if f.is_empty() {
                continue;
            }
            let at = usize::from(u16::from_le_bytes([e[1], e[2]])) % f.len();
            if mode & 2 == 2 && e[3] == 0xFF {
                f.truncate(at);
            } else {
                f[at] ^= e[3];
            }
        }
    } else {
        let names = ["log", "keys-0.vec", "keys-1.vec"];
        let mut r = rest;
        files.clear();
        for name in names {
            if r.len() < 2 {
                break;
            }
            let len = usize::from(u16::from_le_bytes([r[0], r[1]])).min(r.len() - 2);
            let mut body = r[2..2 + len].to_vec();
            if name == "log" && mode & 2 == 2 {
                let mut p = shared::log_prefix();
                p.append(&mut body);
                body = p;
            }
            files.push((name.to_owned(), body));
            r = &r[2 + len..];
        }
    }
    shared::exercise(&files);
});
