//! Arbitrary graph files: decoded alone (header, adjacency checksum and bounds), and placed as
//! `graph-0.idx` beside a small valid database that is opened, searched approximately,
//! verified and compacted. First byte: bit 0 fixes up the header checksum and bit 1 the
//! adjacency checksum, so the fields behind them are reached.
#![no_main]

mod shared;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((mode, rest)) = data.split_first() else {
        return;
    };
    let mut g = rest.to_vec();
    if g.len() >= 64 {
        if mode & 2 == 2 {
            // Adjacency: rows (u64 at 32) x degree (u16 at 22) x 4 bytes after the header.
            let rows = u64::from_le_bytes(g[32..40].try_into().unwrap());
            let degree = u64::from(u16::from_le_bytes([g[22], g[23]]));
            let end = rows
                .checked_mul(degree * 4)
                .and_then(|n| n.checked_add(64))
                .filter(|&e| e <= g.len() as u64);
            if let Some(end) = end {
                let crc = crc32fast::hash(&g[64..end as usize]);
                g[52..56].copy_from_slice(&crc.to_le_bytes());
            }
        }
        if mode & 1 == 1 {
            let crc = crc32fast::hash(&g[..60]);
            g[60..64].copy_from_slice(&crc.to_le_bytes());
        }
    }
    let _ = trajdb::index::graph::fuzz_decode_graph(&g);
    let mut files: Vec<(String, Vec<u8>)> = shared::seed_db()
        .iter()
        .filter(|(n, _)| !n.starts_with("graph-"))
        .cloned()
        .collect();
    files.push(("graph-0.idx".to_owned(), g));
    shared::exercise(&files);
});
