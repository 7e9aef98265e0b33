//! Each kind of damage to the end of the log is cut off on open and everything committed
//! before it is intact; damage in the middle is a typed error naming file and offset.

mod support;
use std::fs::OpenOptions;
use std::io::Write;

use support::*;
use trajdb::{Database, Error, Options, Trajectory};

/// A database of 10 trajectories; returns them and the log length after the 9th.
fn build(name: &str) -> (std::path::PathBuf, Vec<Trajectory>, u64) {
    let dir = tmp(name);
    let db = Database::open(&dir, Options::default()).unwrap();
    for s in spaces(8) {
        db.create_space(&s).unwrap();
    }
    let mut rng = Rng::new(11);
    let mut out = Vec::new();
    let mut len9 = 0;
    for n in 0..10 {
        let id = db.append(&random_traj(&mut rng, 8, 3, n)).unwrap();
        out.push(db.get(id).unwrap());
        if n == 8 {
            len9 = std::fs::metadata(dir.join("log")).unwrap().len();
        }
    }
    (dir, out, len9)
}

/// Removes the checkpoint the clean close of [`build`] wrote, leaving the files a crash
/// leaves: no checkpoint ever covers a frame a crash can tear, since the log is synced
/// before every checkpoint (a log cut below a checkpoint's end is data lost at rest, which
/// writers refuse until told to accept it: tests/checkpoint.rs).
fn as_after_a_crash(dir: &std::path::Path) {
    std::fs::remove_file(dir.join("checkpoint")).unwrap();
}

fn check_recovers(dir: &std::path::Path, want: &[Trajectory], cut: bool) {
    check_recovers_with(dir, want, cut, Options::default());
}

/// Options of the open that checks everything at open, as every open did before the
/// checkpoint file: it decodes the whole log and checksums every key-file row.
fn paranoid() -> Options {
    Options {
        verify_on_open: true,
        ..Options::default()
    }
}

fn check_recovers_with(dir: &std::path::Path, want: &[Trajectory], cut: bool, opts: Options) {
    let db = Database::open(dir, opts).unwrap();
    assert_eq!(db.open_report().truncated_bytes > 0, cut);
    let got: Vec<Trajectory> = db.ids().iter().map(|i| db.get(*i).unwrap()).collect();
    assert_eq!(got, want);
    db.verify().unwrap();
    // The database keeps working after the repair.
    let mut rng = Rng::new(77);
    db.append(&random_traj(&mut rng, 8, 1, 1000)).unwrap();
    db.verify().unwrap();
}

#[test]
fn torn_last_frame_is_cut_and_earlier_commits_survive() {
    let (dir, all, len9) = build("tail-torn");
    let full = std::fs::metadata(dir.join("log")).unwrap().len();
    let f = OpenOptions::new()
        .write(true)
        .open(dir.join("log"))
        .unwrap();
    f.set_len(len9 + (full - len9) / 2).unwrap();
    as_after_a_crash(&dir);
    check_recovers(&dir, &all[..9], true);
}

#[test]
fn frame_header_cut_short_is_cut() {
    let (dir, all, len9) = build("tail-short-header");
    let f = OpenOptions::new()
        .write(true)
        .open(dir.join("log"))
        .unwrap();
    f.set_len(len9 + 10).unwrap();
    as_after_a_crash(&dir);
    check_recovers(&dir, &all[..9], true);
}

#[test]
fn zeroed_tail_after_last_frame_is_cut() {
    let (dir, all, _) = build("tail-zeros");
    let mut f = OpenOptions::new()
        .append(true)
        .open(dir.join("log"))
        .unwrap();
    f.write_all(&[0u8; 4096]).unwrap();
    check_recovers(&dir, &all, true);
}

#[test]
fn garbage_tail_after_last_frame_is_cut() {
    let (dir, all, _) = build("tail-garbage");
    let mut f = OpenOptions::new()
        .append(true)
        .open(dir.join("log"))
        .unwrap();
    let junk: Vec<u8> = (0..1000u32).map(|i| (i * 31 % 251) as u8).collect();
    f.write_all(&junk).unwrap();
    check_recovers(&dir, &all, true);
}

#[test]
fn flipped_byte_in_last_frame_payload_is_cut_as_torn() {
    // After a crash (no checkpoint covers the last frame) a damaged last frame cannot be
    // told from a torn write: cut, its bytes kept.
    let (dir, all, len9) = build("tail-flip-last");
    let mut bytes = std::fs::read(dir.join("log")).unwrap();
    bytes[len9 as usize + 40] ^= 0x40;
    std::fs::write(dir.join("log"), &bytes).unwrap();
    as_after_a_crash(&dir);
    check_recovers(&dir, &all[..9], true);
}

#[test]
fn a_damaged_last_frame_that_a_checkpoint_covers_is_refused_not_cut() {
    // The checkpoint of the clean close covers the last frame: it was committed and synced,
    // so damage there is at rest, and a writer must not cut it without being told to.
    let (dir, all, len9) = build("tail-flip-covered");
    let mut bytes = std::fs::read(dir.join("log")).unwrap();
    let full = bytes.len() as u64;
    bytes[len9 as usize + 40] ^= 0x40;
    std::fs::write(dir.join("log"), &bytes).unwrap();
    let err = Database::open(&dir, Options::default()).expect_err("a writer refuses");
    assert!(
        matches!(err, Error::Corrupt { offset, .. } if offset == len9),
        "{err}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("checkpoint records commits up to byte {full}"))
            && msg.contains("accept_log_cut"),
        "{msg}"
    );
    assert_eq!(
        std::fs::read(dir.join("log")).unwrap(),
        bytes,
        "nothing written"
    );
    // A reader answers from the commits before it and says what it ignored.
    let ro = Database::open(
        &dir,
        Options {
            read_only: true,
            ..Options::default()
        },
    )
    .unwrap();
    assert_eq!(ro.open_report().damaged_committed_end, Some(full));
    assert_eq!(ro.ids().len(), 9);
    let err = ro.verify().expect_err("verify fails");
    assert!(err.to_string().contains("damage at rest"), "{err}");
    drop(ro);
    // Told to accept the loss, a writer cuts it and goes on.
    check_recovers_with(
        &dir,
        &all[..9],
        true,
        Options {
            accept_log_cut: true,
            ..Options::default()
        },
    );
}

#[test]
fn flipped_byte_in_a_middle_frame_is_reported_with_file_and_offset() {
    let (dir, _, _) = build("middle-flip");
    let mut bytes = std::fs::read(dir.join("log")).unwrap();
    let at = 64 + 24 + 3; // inside the first frame's payload
    bytes[at] ^= 0x01;
    std::fs::write(dir.join("log"), &bytes).unwrap();
    let before = bytes.clone();
    // The open that checks everything refuses it, naming the file and the frame.
    let err = Database::open(&dir, paranoid()).expect_err("open must fail");
    assert!(matches!(err, Error::Corrupt { offset: 64, .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("log") && msg.contains("byte 64"), "{msg}");
    // An ordinary open trusts the checkpoint for the frames it covers and does not read
    // this one; `verify` reads every frame and reports the same damage.
    let db = Database::open(&dir, Options::default()).unwrap();
    assert!(db.open_report().checkpoint_end.is_some());
    let err = db.verify().expect_err("verify must fail");
    assert!(matches!(err, Error::Corrupt { offset: 64, .. }), "{err}");
    drop(db);
    // Nothing was truncated or rewritten.
    assert_eq!(std::fs::read(dir.join("log")).unwrap(), before);
}

#[test]
fn damaged_or_missing_key_files_are_rebuilt_from_the_log() {
    let (dir, all, _) = build("keys-rebuild");
    std::fs::remove_file(dir.join("keys-0.vec")).unwrap();
    std::fs::write(dir.join("keys-1.vec"), b"not a key file").unwrap();
    let mut k2 = std::fs::read(dir.join("keys-2.vec")).unwrap();
    k2[3] ^= 0xff; // header magic
    std::fs::write(dir.join("keys-2.vec"), &k2).unwrap();
    check_recovers(&dir, &all, false);
}

#[test]
fn newer_format_version_is_refused_with_the_version_numbers() {
    let (dir, _, _) = build("newer-version");
    let mut bytes = std::fs::read(dir.join("log")).unwrap();
    bytes[8..12].copy_from_slice(&2u32.to_le_bytes());
    let crc = crc32(&bytes[..60]);
    bytes[60..64].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(dir.join("log"), &bytes).unwrap();
    let err = Database::open(&dir, Options::default()).expect_err("refused");
    assert!(
        matches!(
            err,
            Error::IncompatibleVersion {
                found: 2,
                supported: 1,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn a_foreign_file_is_not_a_database() {
    let dir = tmp("foreign");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("log"),
        b"hello, this is not trajdb at all; just some text.......",
    )
    .unwrap();
    let err = Database::open(&dir, Options::default()).expect_err("refused");
    assert!(matches!(err, Error::NotADatabase { .. }), "{err}");
    assert!(
        !dir.join(trajdb::LOCK_FILE).exists(),
        "a refused writer open leaves no LOCK file beside a foreign log"
    );
    // Nor touches a LOCK file of someone else's that is there (open or repair).
    std::fs::write(dir.join(trajdb::LOCK_FILE), b"keep me").unwrap();
    let err = Database::open(&dir, Options::default()).expect_err("refused");
    assert!(matches!(err, Error::NotADatabase { .. }), "{err}");
    let err = Database::repair(&dir).expect_err("refused");
    assert!(matches!(err, Error::NotADatabase { .. }), "{err}");
    assert_eq!(
        std::fs::read(dir.join(trajdb::LOCK_FILE)).unwrap(),
        b"keep me"
    );
    // A log of just the magic bytes is named for what it is: too short.
    std::fs::write(dir.join("log"), b"TRAJDBLG").unwrap();
    let err = Database::open(&dir, Options::default()).expect_err("refused");
    assert!(
        err.to_string()
            .contains("the log is 8 bytes, shorter than its 64-byte header"),
        "{err}"
    );
    let dir2 = tmp("foreign-dir");
    std::fs::create_dir_all(&dir2).unwrap();
    std::fs::write(dir2.join("notes.txt"), b"x").unwrap();
    let err = Database::open(&dir2, Options::default()).expect_err("refused");
    assert!(matches!(err, Error::NotADatabase { .. }), "{err}");
    assert_eq!(
        std::fs::read_dir(&dir2).unwrap().count(),
        1,
        "nothing was added to a foreign directory"
    );
}

/// CRC-32 (IEEE), written here so the test does not depend on the crate's helper.
fn crc32(bytes: &[u8]) -> u32 {
    let mut c = 0xffff_ffffu32;
    for &b in bytes {
        c ^= u32::from(b);
        for _ in 0..8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0xedb8_8320
            } else {
                c >> 1
            };
        }
    }
    !c
}

#[test]
fn flipped_byte_in_a_key_file_row_is_found_by_verify_and_rebuilt_by_a_writable_open() {
    let (dir, all, _) = build("keys-flip");
    let mut k = std::fs::read(dir.join("keys-2.vec")).unwrap();
    let at = 64 + 8 * 4 * 5 + 2; // row 5 of the 8-dim observation space
    k[at] ^= 0x10;
    std::fs::write(dir.join("keys-2.vec"), &k).unwrap();
    let ro = || Options {
        read_only: true,
        ..Default::default()
    };
    let err = Database::open(&dir, ro())
        .unwrap()
        .verify()
        .expect_err("read-only verify fails");
    assert!(matches!(err, Error::Corrupt { offset: 224, .. }), "{err}");
    assert!(err.to_string().contains("keys-2.vec"), "{err}");
    // An ordinary writable open trusts the rows the checkpoint covers without reading them;
    // its `verify` compares every row with the log and finds the damage.
    let db = Database::open(&dir, Options::default()).unwrap();
    assert!(db.open_report().checkpoint_end.is_some());
    let err = db.verify().expect_err("writer verify fails");
    assert!(matches!(err, Error::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("keys-2.vec"), "{err}");
    drop(db);
    // The rows' checksum in the key-file header no longer holds: the open that checks
    // everything rebuilds the file from the log, so searches never use the damaged row.
    check_recovers_with(&dir, &all, false, paranoid());
    Database::open(&dir, ro()).unwrap().verify().unwrap();
}

#[test]
fn repair_keeps_the_prefix_before_an_out_of_order_lost_frame_and_saves_the_rest() {
    let (dir, all, len9) = build("repair");
    // The 9th frame's bytes never reached the disk but the 10th did (unsynced writes under
    // Buffered or GroupCommit may land out of order): zero the 9th trajectory's frame.
    let mut bytes = std::fs::read(dir.join("log")).unwrap();
    let len8 = {
        // Offset of the 9th trajectory frame: walk the frame sizes from the header.
        let mut pos = 64usize;
        let mut starts = Vec::new();
        while pos < bytes.len() {
            starts.push(pos);
            let len = u32::from_le_bytes(bytes[pos..pos + 4].try_into().unwrap()) as usize;
            pos += (24 + len).div_ceil(8) * 8;
        }
        starts[starts.len() - 2]
    };
    assert!(len8 < len9 as usize);
    for b in &mut bytes[len8 + 8..len9 as usize] {
        *b = 0;
    }
    std::fs::write(dir.join("log"), &bytes).unwrap();
    // A checkpoint covers only frames synced before it was written, so after a crash that
    // lost an unsynced frame no checkpoint covers it: remove the one `build` left at close
    // (which covers every frame) to make the files such a crash leaves.
    std::fs::remove_file(dir.join(trajdb::checkpoint::CHECKPOINT_FILE)).unwrap();
    let err = Database::open(&dir, Options::default()).expect_err("refused");
    assert!(matches!(err, Error::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("trajdb repair"), "{err}");
    let report = Database::repair(&dir).unwrap();
    assert_eq!(report.cut_at, Some(len8 as u64));
    let saved = std::fs::read(dir.join(report.cut_file.unwrap())).unwrap();
    assert_eq!(saved, bytes[len8..].to_vec());
    check_recovers(&dir, &all[..8], false);
    // A second repair finds nothing to cut.
    assert_eq!(Database::repair(&dir).unwrap().cut_at, None);
}
