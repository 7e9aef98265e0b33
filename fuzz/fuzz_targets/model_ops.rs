//! The model-based operation sequences (crash, reopen, compact, fork) driven by fuzz bytes.
#![no_main]

mod shared;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (ops, durability) = shared::common::model::ops_from_bytes(data);
    shared::common::model::run(&ops, durability);
});
