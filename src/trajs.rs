//! The trajectory table: per-slot metadata ([`TrajMeta`]). After an open from a checkpoint
//! the table is the checkpoint's own trajectory records and outcome history, read in place
//! (no per-trajectory work or memory at open); a slot changed since (deleted, relabelled)
//! is kept beside them, as are the slots added since. After a log scan every slot is kept
//! in memory.
//!
//! The checkpoint's bytes are checked block by block before they are trusted (see
//! `checkpoint::Checked` and `Database::ensure_checked`); this module only reads them.

use std::collections::HashMap;

use crate::checkpoint::{self, HistRec, TrajRec};
use crate::db::TrajMeta;
use crate::format::record::ProvenanceKind;
use crate::storage::mmap::SharedArray;

/// Trajectory metadata by slot.
#[derive(Default)]
pub(crate) struct Trajs {
    /// The checkpoint's records, slot `i` at position `i` (empty after a scan).
    base: SharedArray<TrajRec>,
    /// The checkpoint's outcome history; the entries of slot `i` end at
    /// `base[i].history_end` and start where slot `i - 1`'s end.
    hist: SharedArray<HistRec>,
    /// Base slots changed since the checkpoint, by slot.
    changed: HashMap<u32, TrajMeta>,
    /// One bit per base slot, set when the slot is in `changed`; empty until the first
    /// change, so an unchanged table costs no lookup.
    changed_bits: Vec<u64>,
    /// Slots after the base.
    extra: Vec<TrajMeta>,
}

impl Trajs {
    /// The table of a checkpoint: its trajectory records and their outcome history.
    pub(crate) fn from_checkpoint(base: SharedArray<TrajRec>, hist: SharedArray<HistRec>) -> Self {
        Trajs {
            base,
            hist,
            ..Trajs::default()
        }
    }

    /// Number of slots.
    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.base.len() + self.extra.len()
    }

    #[inline]
    fn is_changed(&self, slot: usize) -> bool {
        self.changed_bits
            .get(slot / 64)
            .is_some_and(|w| w >> (slot % 64) & 1 == 1)
    }

    /// Number of slots read from the checkpoint.
    pub(crate) fn base_len(&self) -> usize {
        self.base.len()
    }

    /// The range of history entries of base slot `slot` (as the records give it).
    pub(crate) fn hist_range(&self, slot: usize) -> Option<(usize, usize)> {
        let end = |i: usize| usize::try_from(u32::from_le(self.base.get(i)?.history_end)).ok();
        let start = if slot == 0 { Some(0) } else { end(slot - 1) };
        Some((start?, end(slot)?))
    }

    /// The history entries of base slot `slot` (empty when the ends are out of order or
    /// past the history, which only a checkpoint that fails `verify` can hold).
    fn hist_of(&self, slot: usize) -> &[HistRec] {
        match self.hist_range(slot) {
            Some((a, b)) => self.hist.get(a..b).unwrap_or(&[]),
            None => &[],
        }
    }

    /// Slot `slot`'s metadata, or `None` past the last slot.
    pub(crate) fn get(&self, slot: usize) -> Option<TrajMeta> {
        if slot < self.base.len() {
            if self.is_changed(slot) {
                let s = u32::try_from(slot).ok()?;
                return self.changed.get(&s).cloned();
            }
            Some(checkpoint::traj_from_rec(
                &self.base[slot],
                self.hist_of(slot),
            ))
        } else {
            self.extra.get(slot - self.base.len()).cloned()
        }
    }

    /// Slot `slot`'s metadata; the slot must exist (it came from the id map or the row
    /// metadata, which only name existing slots).
    #[inline]
    pub(crate) fn at(&self, slot: usize) -> TrajMeta {
        self.get(slot).unwrap_or_else(|| {
            // Only a bug can get here: every slot number in the state names a slot.
            unreachable!("slot {slot} of {} trajectories", self.len())
        })
    }

    /// Starts loading what [`id`](Self::id) reads of slot `slot` (a hint: no effect on
    /// results).
    #[inline]
    pub(crate) fn prefetch_id(&self, slot: usize) {
        if let Some(r) = self.base.get(slot..slot.saturating_add(1)) {
            crate::index::simd::prefetch(r);
        }
    }

    /// The id of slot `slot` without decoding the rest.
    #[inline]
    pub(crate) fn id(&self, slot: usize) -> u64 {
        if slot < self.base.len() && !self.is_changed(slot) {
            u64::from_le(self.base[slot].id)
        } else {
            self.at(slot).id
        }
    }

    /// True when slot `slot` is deleted (as of now).
    #[inline]
    pub(crate) fn deleted(&self, slot: usize) -> bool {
        if slot < self.base.len() && !self.is_changed(slot) {
            checkpoint::rec_deleted(&self.base[slot])
        } else {
            self.at(slot).deleted_at.is_some()
        }
    }

    /// Every slot as a filter reads it, in slot order.
    pub(crate) fn views(&self) -> impl Iterator<Item = TrajView<'_>> + '_ {
        (0..self.len()).map(|s| self.view(s))
    }

    /// Every slot's metadata, in slot order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = TrajMeta> + '_ {
        (0..self.len()).map(|s| self.at(s))
    }

    /// Adds a slot at the end.
    pub(crate) fn push(&mut self, m: TrajMeta) {
        self.extra.push(m);
    }

    /// Changes slot `slot` with `f`; `false` when there is no such slot.
    pub(crate) fn update(&mut self, slot: usize, f: impl FnOnce(&mut TrajMeta)) -> bool {
        if slot >= self.base.len() {
            return match self.extra.get_mut(slot - self.base.len()) {
                Some(m) => {
                    f(m);
                    true
                }
                None => false,
            };
        }
        let Ok(s) = u32::try_from(slot) else {
            return false;
        };
        if !self.is_changed(slot) {
            let m = checkpoint::traj_from_rec(&self.base[slot], self.hist_of(slot));
            if self.changed_bits.is_empty() {
                self.changed_bits = vec![0; self.base.len().div_ceil(64)];
            }
            self.changed_bits[slot / 64] |= 1 << (slot % 64);
            self.changed.insert(s, m);
        }
        match self.changed.get_mut(&s) {
            Some(m) => {
                f(m);
                true
            }
            None => false,
        }
    }

    /// Slot `slot` as a filter reads it, without decoding the rest (search and retrieval
    /// test every row's or every trajectory's slot).
    #[inline]
    pub(crate) fn view(&self, slot: usize) -> TrajView<'_> {
        if slot < self.base.len() {
            if self.is_changed(slot) {
                if let Some(m) = u32::try_from(slot).ok().and_then(|s| self.changed.get(&s)) {
                    return TrajView::Meta(m);
                }
            }
            return TrajView::Rec(&self.base[slot], self, slot);
        }
        match self.extra.get(slot - self.base.len()) {
            Some(m) => TrajView::Meta(m),
            // Only a bug can get here: every slot number in the state names a slot.
            None => unreachable!("slot {slot} of {} trajectories", self.len()),
        }
    }
}

/// One slot's metadata as a filter reads it: the checkpoint's record in place, or the
/// metadata kept in memory.
pub(crate) enum TrajView<'a> {
    /// An unchanged checkpoint slot: its record, and the table and slot number its history
    /// entries are found by (looked up only by a view as of an earlier commit, so a filter
    /// on the present state reads the record alone).
    Rec(&'a TrajRec, &'a Trajs, usize),
    /// A slot kept in memory.
    Meta(&'a TrajMeta),
}

impl TrajView<'_> {
    /// The trajectory id.
    #[inline]
    pub(crate) fn id(&self) -> u64 {
        match self {
            TrajView::Rec(r, ..) => u64::from_le(r.id),
            TrajView::Meta(m) => m.id,
        }
    }

    /// Visible in a view as of commit `as_of` (None = now), as [`TrajMeta::visible`].
    #[inline]
    pub(crate) fn visible(&self, as_of: Option<u64>) -> bool {
        match self {
            TrajView::Rec(r, ..) => {
                let deleted = checkpoint::rec_deleted(r).then(|| u64::from_le(r.deleted_at));
                match as_of {
                    None => deleted.is_none(),
                    Some(s) => u64::from_le(r.seq) <= s && deleted.is_none_or(|d| d > s),
                }
            }
            TrajView::Meta(m) => m.visible(as_of),
        }
    }

    /// The success flag as of commit `as_of` (None = now), as [`TrajMeta::outcome_at`].
    #[inline]
    pub(crate) fn success_at(&self, as_of: Option<u64>) -> Option<bool> {
        match self {
            TrajView::Rec(r, trajs, slot) => {
                let code = match as_of {
                    Some(s) => trajs
                        .hist_of(*slot)
                        .iter()
                        .rev()
                        .find(|h| u64::from_le(h.seq) <= s)
                        .map_or(r.success, |h| h.success),
                    None => r.success,
                };
                checkpoint::success_of(code)
            }
            TrajView::Meta(m) => m.outcome_at(as_of).success,
        }
    }

    /// Sequence number of its commit.
    #[inline]
    pub(crate) fn seq(&self) -> u64 {
        match self {
            TrajView::Rec(r, ..) => u64::from_le(r.seq),
            TrajView::Meta(m) => m.seq,
        }
    }

    /// Number of steps.
    #[inline]
    pub(crate) fn n_steps(&self) -> u32 {
        match self {
            TrajView::Rec(r, ..) => u32::from_le(r.n_steps),
            TrajView::Meta(m) => m.n_steps,
        }
    }

    /// Env and task name indexes.
    #[inline]
    pub(crate) fn env_task(&self) -> (u32, u32) {
        match self {
            TrajView::Rec(r, ..) => (u32::from_le(r.env), u32::from_le(r.task)),
            TrajView::Meta(m) => (m.env, m.task),
        }
    }

    /// How it was made.
    #[inline]
    pub(crate) fn provenance(&self) -> ProvenanceKind {
        match self {
            TrajView::Rec(r, ..) => ProvenanceKind::from_code(r.provenance).unwrap_or_default(),
            TrajView::Meta(m) => m.provenance,
        }
    }
}
