//! The numbers in format-spec.md and the constants in the code are the same numbers.

use trajdb::checkpoint;
use trajdb::format::log;
use trajdb::index::graph;
use trajdb::index::keyfile;
use trajdb::index::sidecar;

fn spec() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/format-spec.md"))
        .expect("format-spec.md is readable")
}

/// Rows `| a | b | ... |` of the first table after the heading `heading`.
fn table(spec: &str, heading: &str) -> Vec<Vec<String>> {
    let start = spec
        .lines()
        .position(|l| l.trim_start_matches('#').trim() == heading && l.starts_with('#'))
        .unwrap_or_else(|| panic!("format-spec.md has no heading `{heading}`"));
    spec.lines()
        .skip(start + 1)
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .skip(2)
        .map(|l| {
            l.trim_matches('|')
                .split('|')
                .map(|c| c.trim().trim_matches('`').to_owned())
                .collect()
        })
        .collect()
}

fn num(s: &str) -> u64 {
    if let Some(h) = s.strip_prefix("0x") {
        u64::from_str_radix(h, 16).expect("hex")
    } else {
        s.parse()
            .unwrap_or_else(|_| panic!("`{s}` is not a number"))
    }
}

#[test]
fn constants_table_matches_code() {
    let spec = spec();
    let rows = table(&spec, "Constants");
    let get = |name: &str| -> String {
        rows.iter()
            .find(|r| r[0] == name)
            .unwrap_or_else(|| panic!("constant {name} missing from the spec"))[1]
            .clone()
    };
    assert_eq!(get("LOG_MAGIC").as_bytes(), &log::LOG_MAGIC);
    assert_eq!(get("KEY_MAGIC").as_bytes(), &keyfile::KEY_MAGIC);
    assert_eq!(num(&get("FORMAT_VERSION")), u64::from(log::FORMAT_VERSION));
    assert_eq!(num(&get("LOG_HEADER_LEN")), log::LOG_HEADER_LEN);
    assert_eq!(num(&get("FRAME_HEADER_LEN")), log::FRAME_HEADER_LEN);
    assert_eq!(num(&get("FRAME_ALIGN")), log::FRAME_ALIGN);
    assert_eq!(num(&get("MAX_PAYLOAD")), u64::from(log::MAX_PAYLOAD));
    assert_eq!(num(&get("LEN_SALT")), u64::from(log::LEN_SALT));
    assert_eq!(num(&get("CRC_SALT")), u64::from(log::CRC_SALT));
    assert_eq!(num(&get("KEY_VERSION")), u64::from(keyfile::KEY_VERSION));
    assert_eq!(num(&get("KEY_HEADER_LEN")), keyfile::KEY_HEADER_LEN);
    assert_eq!(
        get("CHECKPOINT_MAGIC").as_bytes(),
        &checkpoint::CHECKPOINT_MAGIC
    );
    assert_eq!(
        num(&get("CHECKPOINT_VERSION")),
        u64::from(checkpoint::CHECKPOINT_VERSION)
    );
    assert_eq!(
        num(&get("CHECKPOINT_HEADER_LEN")),
        checkpoint::CHECKPOINT_HEADER_LEN
    );
    assert_eq!(
        num(&get("CHECKPOINT_BLOCK_LEN")),
        checkpoint::CHECKPOINT_BLOCK_LEN
    );
    assert_eq!(
        1u64 << checkpoint::CHECKPOINT_BLOCK_SHIFT,
        checkpoint::CHECKPOINT_BLOCK_LEN
    );
    assert_eq!(
        num(&get("CHECKPOINT_AUTO_BYTES")),
        checkpoint::CHECKPOINT_AUTO_BYTES
    );
    assert_eq!(get("BOUNDS_MAGIC").as_bytes(), &sidecar::BOUNDS_MAGIC);
    assert_eq!(
        num(&get("BOUNDS_VERSION")),
        u64::from(sidecar::BOUNDS_VERSION)
    );
    assert_eq!(num(&get("BOUNDS_HEADER_LEN")), sidecar::BOUNDS_HEADER_LEN);
    assert_eq!(get("GRAPH_MAGIC").as_bytes(), &graph::GRAPH_MAGIC);
    assert_eq!(num(&get("GRAPH_VERSION")), u64::from(graph::GRAPH_VERSION));
    assert_eq!(num(&get("GRAPH_HEADER_LEN")), graph::GRAPH_HEADER_LEN);
    assert_eq!(rows.len(), 22, "every spec constant is checked here");
}

/// Checks offsets and sizes of a header table; sizes must tile the header exactly.
fn check_layout(heading: &str, expect: &[(&str, usize)], total: u64) {
    let spec = spec();
    let rows = table(&spec, heading);
    let mut end = 0;
    for r in &rows {
        // Variable-length parts (payload, padding) end the fixed layout.
        if r[0].parse::<u64>().is_err() {
            break;
        }
        let (off, size) = (num(&r[0]), &r[1]);
        assert_eq!(
            off, end,
            "{heading}: field {} does not start where the last ended",
            r[2]
        );
        if let Ok(sz) = size.parse::<u64>() {
            end = off + sz;
        } else {
            end = total;
        }
    }
    assert!(
        end >= total,
        "{heading}: fields cover {end} of {total} bytes"
    );
    for (field, off) in expect {
        let row = rows
            .iter()
            .find(|r| r[2] == *field)
            .unwrap_or_else(|| panic!("{heading}: no field {field}"));
        assert_eq!(num(&row[0]), *off as u64, "{heading}: offset of {field}");
    }
}

#[test]
fn log_header_layout_matches_code() {
    use log::header::*;
    check_layout(
        "Log header",
        &[
            ("magic", MAGIC),
            ("version", VERSION),
            ("flags", FLAGS),
            ("log_id", LOG_ID),
            ("base_seq", BASE_SEQ),
            ("created_ms", CREATED_MS),
            ("id_floor", ID_FLOOR),
            ("origin", ORIGIN),
            ("reserved", RESERVED),
            ("crc", CRC),
        ],
        log::LOG_HEADER_LEN,
    );
}

#[test]
fn graph_file_header_layout_matches_code() {
    use graph::header::*;
    check_layout(
        "Graph-file header",
        &[
            ("magic", MAGIC),
            ("version", VERSION),
            ("space_id", SPACE_ID),
            ("dims", DIMS),
            ("metric", METRIC),
            ("degree", DEGREE),
            ("ef_construction", EF_CONSTRUCTION),
            ("entry", ENTRY),
            ("rows", ROWS),
            ("log_id", LOG_ID),
            ("rows_crc", ROWS_CRC),
            ("adj_crc", ADJ_CRC),
            ("crc", CRC),
        ],
        graph::GRAPH_HEADER_LEN,
    );
}

#[test]
fn frame_header_layout_matches_code() {
    use log::frame::*;
    check_layout(
        "Frames",
        &[
            ("len", LEN),
            ("len_check", LEN_CHECK),
            ("seq", SEQ),
            ("kind", KIND),
            ("flags", FLAGS),
            ("crc", CRC),
            ("payload", 24),
        ],
        log::FRAME_HEADER_LEN,
    );
}

#[test]
fn key_file_header_layout_matches_code() {
    use keyfile::header::*;
    let spec = spec();
    let rows = table(&spec, "Key-file header");
    let offsets: Vec<u64> = rows.iter().map(|r| num(&r[0])).collect();
    for (field, off) in [
        ("magic", MAGIC),
        ("version", VERSION),
        ("space_id", SPACE_ID),
        ("dims", DIMS),
        ("elem", ELEM),
        ("metric", METRIC),
        ("stride", STRIDE),
        ("rows", ROWS),
        ("log_id", LOG_ID),
        ("rows_crc", ROWS_CRC),
        ("crc", CRC),
    ] {
        let row = rows.iter().find(|r| r[2] == field).expect(field);
        assert_eq!(
            num(&row[0]),
            off as u64,
            "key-file header: offset of {field}"
        );
    }
    assert!(offsets.contains(&(RESERVED0 as u64)));
    assert!(offsets.contains(&(RESERVED1 as u64)));
    assert!(offsets.contains(&(RESERVED2 as u64)));
    check_layout("Key-file header", &[], keyfile::KEY_HEADER_LEN);
}

#[test]
fn record_kind_table_matches_code() {
    use log::kind::*;
    let spec = spec();
    let rows = table(&spec, "Record kinds");
    let code = [
        ("SPACE", SPACE),
        ("TRAJECTORY", TRAJECTORY),
        ("DELETE", DELETE),
        ("EPISODE_BEGIN", EPISODE_BEGIN),
        ("RETRIEVALS", RETRIEVALS),
        ("EPISODE_OUTCOME", EPISODE_OUTCOME),
        ("TRAJ_OUTCOME", TRAJ_OUTCOME),
        ("ORIGIN", ORIGIN),
        ("EPISODE_MERGED", EPISODE_MERGED),
    ];
    assert_eq!(rows.len(), code.len());
    for (name, k) in code {
        let row = rows.iter().find(|r| r[1] == name).expect(name);
        assert_eq!(num(&row[0]), u64::from(k), "kind of {name}");
    }
}

#[test]
fn checkpoint_header_layout_matches_code() {
    use checkpoint::header::*;
    check_layout(
        "Checkpoint header",
        &[
            ("magic", MAGIC),
            ("version", VERSION),
            ("flags", FLAGS),
            ("log_id", LOG_ID),
            ("base_seq", BASE_SEQ),
            ("end", END),
            ("last_offset", LAST_OFFSET),
            ("last_seq", LAST_SEQ),
            ("last_crc", LAST_CRC),
            ("blocks_crc", BLOCKS_CRC),
            ("body_len", BODY_LEN),
            ("block_shift", BLOCK_SHIFT),
            ("reserved", RESERVED),
            ("crc", CRC),
        ],
        checkpoint::CHECKPOINT_HEADER_LEN,
    );
}

/// The body table's record sizes add up to what the code writes: a checkpoint of a database
/// with one of everything has exactly the size the table gives.
#[test]
fn checkpoint_body_record_sizes_match_the_spec() {
    let spec = spec();
    let rows = table(&spec, "Checkpoint body");
    let size = |area: &str| -> u64 {
        let r = rows
            .iter()
            .find(|r| r[0] == area)
            .unwrap_or_else(|| panic!("no area {area}"));
        num(r[1].split([' ', ',']).next().unwrap())
    };
    let areas = [
        "counts",
        "spaces",
        "name ends",
        "counters",
        "episodes",
        "events",
        "merged",
        "trajectories",
        "history",
        "rows",
    ];
    let spec_sizes: Vec<usize> = areas
        .iter()
        .map(|a| usize::try_from(size(a)).unwrap())
        .collect();
    assert_eq!(spec_sizes, checkpoint::record_sizes());
    assert_eq!(
        checkpoint::record_sizes(),
        [128, 16, 4, 40, 48, 16, 24, 88, 24, 8]
    );
}

/// The provenance byte's origin bit is the number the spec's TRAJECTORY table gives.
#[test]
fn provenance_origin_bit_matches_code() {
    let spec = spec();
    let rows = table(&spec, "TRAJECTORY (kind 2)");
    let row = rows
        .iter()
        .find(|r| r[0] == "provenance.kind")
        .expect("provenance.kind row");
    let bit = row[1]
        .split("bit 7 (")
        .nth(1)
        .and_then(|r| r.split(',').next())
        .expect("the row names bit 7 (0x.., ...)");
    assert_eq!(num(bit), u64::from(log::PROVENANCE_ORIGIN_BIT));
    assert!(row[1].contains("PROVENANCE_ORIGIN_BIT"));
    for field in ["ORIGIN (kind 8)", "EPISODE_MERGED (kind 9)"] {
        assert!(!table(&spec, field).is_empty(), "{field} has a table");
    }
    let merged: Vec<String> = table(&spec, "EPISODE_MERGED (kind 9)")
        .iter()
        .map(|r| r[0].clone())
        .collect();
    assert_eq!(
        merged,
        ["episode", "created_ms", "origin", "origin_episode"]
    );
}

#[test]
fn search_bounds_header_layout_matches_code() {
    use sidecar::header::*;
    check_layout(
        "Search-bounds header",
        &[
            ("magic", MAGIC),
            ("version", VERSION),
            ("kind", KIND),
            ("log_id", LOG_ID),
            ("space_id", SPACE_ID),
            ("dims", DIMS),
            ("rows", ROWS),
            ("rows_crc", ROWS_CRC),
            ("metric", METRIC),
            ("body_len", BODY_LEN),
            ("body_crc", BODY_CRC),
            ("crc", CRC),
        ],
        sidecar::BOUNDS_HEADER_LEN,
    );
    let spec = spec();
    let kinds = spec
        .lines()
        .find(|l| l.starts_with("| 12 | 4 | kind |"))
        .expect("kind row");
    assert!(kinds.contains(&format!("{} quantised rows", sidecar::KIND_QUANTISED_ROWS)));
    assert!(kinds.contains(&format!("{} step bounds", sidecar::KIND_STEP_BOUNDS)));
}

#[test]
fn graph_catch_up_limits_in_the_spec_match_code() {
    // The spec states them in prose ("Graph files"); the numbers must be the code's.
    let s = spec().split_whitespace().collect::<Vec<_>>().join(" ");
    let per_search = trajdb::CATCHUP_PER_SEARCH;
    assert!(
        s.contains(&format!(
            "A search inserts at most {per_search} pending rows (`CATCHUP_PER_SEARCH`)"
        )),
        "spec's per-search catch-up differs from {per_search}"
    );
    let read_only = trajdb::READ_ONLY_CATCHUP_ROWS;
    let grouped = format!("{},{:03}", read_only / 1000, read_only % 1000);
    assert!(
        s.contains(&format!(
            "at most {grouped} rows (`READ_ONLY_CATCHUP_ROWS`)"
        )),
        "spec's read-only catch-up differs from {grouped}"
    );
}
