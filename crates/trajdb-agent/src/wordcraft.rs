//! The Wordcraft environment (Jiang et al. 2020) as a text environment.
//!
//! A [`RecipeBook`] holds entities and two-ingredient recipes. It can be read from the
//! benchmark's `alchemy2.json` ([`RecipeBook::from_alchemy2_json`]) or generated from a seed
//! ([`RecipeBook::builtin`]), which is the recipe set the project owns and ships.
//! [`RecipeBook::tasks`] enumerates the benchmark's tasks for a recipe-tree depth, [`split`]
//! divides tasks into train and test sets, and [`WordcraftEnv`] plays one task through text
//! actions (`select NAME` or `select N`).
//!
//! Everything here is deterministic: the same book, task and seed give the same table, the
//! same task order and the same splits, on every platform.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Arc;

use serde::de::{Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};

// ---------------------------------------------------------------------------------------------
// Deterministic random numbers
// ---------------------------------------------------------------------------------------------

use trajdb::rng::SplitMix64;

/// Mixes a user seed with a constant per purpose so that different uses of one seed
/// (table shuffle, split shuffle, ...) do not produce correlated sequences.
fn derive_seed(seed: u64, purpose: u64) -> u64 {
    let mut rng = SplitMix64::new(seed ^ purpose.wrapping_mul(0xA24B_AED4_963E_E407));
    rng.next_u64()
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// Why a recipe book (or a task given to an environment) could not be built.
///
/// Its `Display` is one line saying what is wrong and where.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RecipeError {
    /// The text is not valid JSON, or does not have the expected shape.
    Json {
        /// 1-based line of the problem (0 when unknown).
        line: usize,
        /// 1-based column of the problem (0 when unknown).
        column: usize,
        /// What the JSON parser reported.
        message: String,
    },
    /// The same entity name appears twice.
    DuplicateEntity {
        /// The repeated name.
        name: String,
    },
    /// A recipe does not have exactly two ingredients.
    BadArity {
        /// The entity the recipe makes.
        entity: String,
        /// 0-based position of the recipe in that entity's list.
        recipe_index: usize,
        /// How many ingredients it has.
        found: usize,
    },
    /// A recipe names an ingredient that is not an entity of the book.
    UnknownIngredient {
        /// The entity the recipe makes.
        entity: String,
        /// 0-based position of the recipe in that entity's list (or in the list given).
        recipe_index: usize,
        /// The unknown name.
        ingredient: String,
    },
    /// A recipe's result is not an entity of the book.
    UnknownResult {
        /// 0-based position of the recipe in the list given.
        recipe_index: usize,
        /// The unknown name.
        result: String,
    },
    /// An entity id is out of range for the book.
    UnknownEntityId {
        /// The id.
        id: u32,
        /// How many entities the book has.
        entity_count: usize,
    },
    /// More entities than fit in a `u32` id.
    TooManyEntities {
        /// How many were given.
        count: usize,
    },
}

impl fmt::Display for RecipeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecipeError::Json {
                line,
                column,
                message,
            } => write!(
                f,
                "invalid recipe JSON at line {line}, column {column}: {message}"
            ),
            RecipeError::DuplicateEntity { name } => {
                write!(f, "entity {name:?} is defined more than once")
            }
            RecipeError::BadArity {
                entity,
                recipe_index,
                found,
            } => write!(
                f,
                "entity {entity:?}, recipe #{recipe_index}: expected 2 ingredients, found {found}"
            ),
            RecipeError::UnknownIngredient {
                entity,
                recipe_index,
                ingredient,
            } => write!(
                f,
                "entity {entity:?}, recipe #{recipe_index}: unknown ingredient {ingredient:?}"
            ),
            RecipeError::UnknownResult {
                recipe_index,
                result,
            } => write!(
                f,
                "recipe #{recipe_index}: unknown result entity {result:?}"
            ),
            RecipeError::UnknownEntityId { id, entity_count } => write!(
                f,
                "entity id {id} is out of range (the recipe book has {entity_count} entities)"
            ),
            RecipeError::TooManyEntities { count } => {
                write!(f, "{count} entities do not fit in 32-bit ids")
            }
        }
    }
}

impl std::error::Error for RecipeError {}

/// Why an action was refused by [`WordcraftEnv::step`].
///
/// A refused action leaves the environment unchanged.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ActionError {
    /// The episode has ended; no more actions are taken.
    EpisodeOver,
    /// The text is not of the form `select NAME` or `select N`.
    Unrecognized {
        /// The action text as given.
        action: String,
    },
    /// The named entity is not on the table.
    NotOnTable {
        /// The name given.
        name: String,
    },
    /// A combine action ([`Interface::Combine`]) does not name exactly two table entities
    /// (one named twice counts as two). It costs nothing.
    NotAPair {
        /// The action text as given.
        action: String,
        /// How many table entities it names.
        named: usize,
    },
    /// The slot index is past the end of the table.
    SlotOutOfRange {
        /// The slot given.
        slot: usize,
        /// How many slots the table has.
        table_len: usize,
    },
}

impl fmt::Display for ActionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ActionError::EpisodeOver => write!(f, "the episode is over; no action is accepted"),
            ActionError::Unrecognized { action } => write!(
                f,
                "unrecognised action {action:?}: expected `select NAME` or `select N`"
            ),
            ActionError::NotOnTable { name } => write!(f, "{name:?} is not on the table"),
            ActionError::NotAPair { action, named } => write!(
                f,
                "action {action:?} names {named} table entities; a combination needs exactly 2"
            ),
            ActionError::SlotOutOfRange { slot, table_len } => write!(
                f,
                "slot {slot} is out of range (the table has {table_len} slots)"
            ),
        }
    }
}

impl std::error::Error for ActionError {}

// ---------------------------------------------------------------------------------------------
// Recipe book
// ---------------------------------------------------------------------------------------------

/// Entities and two-ingredient recipes.
///
/// Entity ids are `u32` indices into the book, in file order for a book read from JSON.
///
/// Two rules are applied when a book is built (both as in the original Wordcraft code):
/// - a recipe whose result is one of its own ingredients is dropped;
/// - when one unordered pair of ingredients is listed for several results, combining the
///   pair yields the result listed **last** in source order (file order of the entity keys,
///   which the parser preserves by reading the map itself). The other results keep the
///   recipe in their own recipe lists, so task enumeration still counts them (this is what
///   gives the benchmark's task counts); such tasks cannot be solved in the environment, see
///   [`RecipeBook::is_solvable`].
#[derive(Debug, Clone)]
pub struct RecipeBook {
    names: Vec<String>,
    by_name: HashMap<String, u32>,
    /// Recipes of each entity, in source order, ingredients as given.
    recipes_of: Vec<Vec<(u32, u32)>>,
    /// Unordered pair (smaller id first) -> result.
    pair_result: HashMap<(u32, u32), u32>,
    /// Distinct unordered pairs, in order of first appearance.
    pairs: Vec<(u32, u32)>,
    /// Number of (result, recipe) entries kept.
    recipe_entries: usize,
}

fn pair_key(a: u32, b: u32) -> (u32, u32) {
    (a.min(b), a.max(b))
}

/// The top level of `alchemy2.json`.
#[derive(Deserialize)]
struct RawFile {
    entities: OrderedEntities,
}

/// An entity of `alchemy2.json`. The `id` field is accepted and ignored.
#[derive(Deserialize)]
struct RawEntity {
    #[serde(default)]
    recipes: Vec<Vec<String>>,
}

/// The `entities` map, read entry by entry so that file order is kept.
struct OrderedEntities(Vec<(String, RawEntity)>);

impl<'de> Deserialize<'de> for OrderedEntities {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct EntitiesVisitor;

        impl<'de> Visitor<'de> for EntitiesVisitor {
            type Value = OrderedEntities;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map from entity name to {\"id\": ..., \"recipes\": [[A, B], ...]}")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry::<String, RawEntity>()? {
                    entries.push(entry);
                }
                Ok(OrderedEntities(entries))
            }
        }

        deserializer.deserialize_map(EntitiesVisitor)
    }
}

/// Strips serde_json's trailing " at line L column C" (reported separately).
fn json_error(err: &serde_json::Error) -> RecipeError {
    let full = err.to_string();
    let suffix = format!(" at line {} column {}", err.line(), err.column());
    let message = full.strip_suffix(&suffix).unwrap_or(&full).to_string();
    RecipeError::Json {
        line: err.line(),
        column: err.column(),
        message,
    }
}

impl RecipeBook {
    /// Builds a book from names and `(a, b, result)` triples in source order.
    fn build(names: Vec<String>, triples: &[(u32, u32, u32)]) -> Result<Self, RecipeError> {
        if u32::try_from(names.len()).is_err() {
            return Err(RecipeError::TooManyEntities { count: names.len() });
        }
        let mut by_name = HashMap::with_capacity(names.len());
        for (i, name) in names.iter().enumerate() {
            if by_name.insert(name.clone(), i as u32).is_some() {
                return Err(RecipeError::DuplicateEntity { name: name.clone() });
            }
        }
        let entity_count = names.len();
        let check = |id: u32| -> Result<(), RecipeError> {
            if (id as usize) < entity_count {
                Ok(())
            } else {
                Err(RecipeError::UnknownEntityId { id, entity_count })
            }
        };
        let mut recipes_of = vec![Vec::new(); entity_count];
        let mut pair_result = HashMap::new();
        let mut pairs = Vec::new();
        let mut recipe_entries = 0;
        for &(a, b, result) in triples {
            check(a)?;
            check(b)?;
            check(result)?;
            if a == result || b == result {
                continue;
            }
            let key = pair_key(a, b);
            if pair_result.insert(key, result).is_none() {
                pairs.push(key);
            }
            if let Some(list) = recipes_of.get_mut(result as usize) {
                list.push((a, b));
                recipe_entries += 1;
            }
        }
        Ok(RecipeBook {
            names,
            by_name,
            recipes_of,
            pair_result,
            pairs,
            recipe_entries,
        })
    }

    /// Parses the benchmark format `{"entities": {NAME: {"id": INT, "recipes": [[A, B], ...]}}}`.
    ///
    /// Entity ids are positions in file order (the file's own `id` values are ignored).
    /// Recipes whose result is one of their ingredients are dropped; a pair listed for
    /// several results combines into the one that comes later in file order (see
    /// [`RecipeBook`]). Errors name the entity and recipe index, or the JSON line and column.
    pub fn from_alchemy2_json(text: &str) -> Result<RecipeBook, RecipeError> {
        let raw: RawFile = serde_json::from_str(text).map_err(|e| json_error(&e))?;
        let entries = raw.entities.0;
        let names: Vec<String> = entries.iter().map(|(name, _)| name.clone()).collect();
        let mut index: HashMap<&str, u32> = HashMap::with_capacity(names.len());
        for (i, name) in names.iter().enumerate() {
            let id = u32::try_from(i)
                .map_err(|_| RecipeError::TooManyEntities { count: names.len() })?;
            if index.insert(name.as_str(), id).is_some() {
                return Err(RecipeError::DuplicateEntity { name: name.clone() });
            }
        }
        let mut triples = Vec::new();
        for (result_id, (name, entity)) in entries.iter().enumerate() {
            for (recipe_index, recipe) in entity.recipes.iter().enumerate() {
                if recipe.len() != 2 {
                    return Err(RecipeError::BadArity {
                        entity: name.clone(),
                        recipe_index,
                        found: recipe.len(),
                    });
                }
                let mut ids = [0u32; 2];
                for (slot, ingredient) in ids.iter_mut().zip(recipe.iter()) {
                    *slot = *index.get(ingredient.as_str()).ok_or_else(|| {
                        RecipeError::UnknownIngredient {
                            entity: name.clone(),
                            recipe_index,
                            ingredient: ingredient.clone(),
                        }
                    })?;
                }
                triples.push((ids[0], ids[1], result_id as u32));
            }
        }
        RecipeBook::build(names, &triples)
    }

    /// Builds a book from entity names and `(a, b, result)` recipes given by name.
    ///
    /// The same rules as for the JSON format apply: self-recipes are dropped and, for a pair
    /// listed twice, the later recipe in `recipes` decides what combining yields.
    pub fn from_named_recipes<S: AsRef<str>>(
        entities: &[S],
        recipes: &[(S, S, S)],
    ) -> Result<RecipeBook, RecipeError> {
        let names: Vec<String> = entities.iter().map(|s| s.as_ref().to_string()).collect();
        let mut index: HashMap<&str, u32> = HashMap::with_capacity(names.len());
        for (i, name) in names.iter().enumerate() {
            let id = u32::try_from(i)
                .map_err(|_| RecipeError::TooManyEntities { count: names.len() })?;
            if index.insert(name.as_str(), id).is_some() {
                return Err(RecipeError::DuplicateEntity { name: name.clone() });
            }
        }
        let mut triples = Vec::with_capacity(recipes.len());
        for (recipe_index, (a, b, result)) in recipes.iter().enumerate() {
            let r = *index
                .get(result.as_ref())
                .ok_or_else(|| RecipeError::UnknownResult {
                    recipe_index,
                    result: result.as_ref().to_string(),
                })?;
            let lookup = |ingredient: &str| {
                index
                    .get(ingredient)
                    .copied()
                    .ok_or_else(|| RecipeError::UnknownIngredient {
                        entity: result.as_ref().to_string(),
                        recipe_index,
                        ingredient: ingredient.to_string(),
                    })
            };
            triples.push((lookup(a.as_ref())?, lookup(b.as_ref())?, r));
        }
        RecipeBook::build(names, &triples)
    }

    /// A synthetic recipe book generated from `seed`, owned by the project.
    ///
    /// Entity names are pronounceable pseudo-words built from syllables. Entities are
    /// layered: 6 base entities (no recipes), then layers of 10, 30, 90, 150 and 180 entities;
    /// every recipe of a layer-`L` entity uses one ingredient from layer `L-1` and one from any
    /// lower layer, and no pair of ingredients makes two different entities, so every task of
    /// this book is solvable. The default seed gives 466 entities, 1,967 recipes (so 1,967
    /// depth-1 tasks) and 14,485 depth-2 tasks.
    pub fn builtin(seed: u64) -> RecipeBook {
        const LAYER_SIZES: [usize; 6] = [6, 10, 30, 90, 150, 180];
        let mut rng = SplitMix64::new(derive_seed(seed, 1));
        let mut names: Vec<String> = Vec::new();
        let mut used_names: HashSet<String> = HashSet::new();
        let mut layer_start = Vec::with_capacity(LAYER_SIZES.len());
        for (layer, &size) in LAYER_SIZES.iter().enumerate() {
            layer_start.push(names.len());
            for _ in 0..size {
                let name = unique_pseudo_word(&mut rng, &mut used_names, layer == 0);
                names.push(name);
            }
        }
        let mut used_pairs: HashSet<(u32, u32)> = HashSet::new();
        let mut triples: Vec<(u32, u32, u32)> = Vec::new();
        for layer in 1..LAYER_SIZES.len() {
            let start = layer_start[layer];
            let prev_start = layer_start[layer - 1];
            let prev_len = start - prev_start;
            for offset in 0..LAYER_SIZES[layer] {
                let result = (start + offset) as u32;
                let wanted = match layer {
                    1 => 2,
                    2 => 2 + rng.below_scaled(3),
                    _ => 3 + rng.below_scaled(4),
                };
                let mut made = 0;
                let mut attempts = 0;
                while made < wanted && attempts < 64 {
                    attempts += 1;
                    let a = (prev_start + rng.below_scaled(prev_len)) as u32;
                    let b = rng.below_scaled(start) as u32;
                    if !used_pairs.insert(pair_key(a, b)) {
                        continue;
                    }
                    if rng.below_scaled(2) == 0 {
                        triples.push((a, b, result));
                    } else {
                        triples.push((b, a, result));
                    }
                    made += 1;
                }
            }
        }
        // Names are unique and ids are in range by construction, so this cannot fail; fall
        // back to an empty book rather than panic if that ever changed.
        RecipeBook::build(names, &triples).unwrap_or_else(|_| RecipeBook::empty())
    }

    /// [`RecipeBook::builtin`] with the project's fixed default seed.
    pub fn builtin_default() -> RecipeBook {
        RecipeBook::builtin(Self::DEFAULT_SEED)
    }

    /// The seed used by [`RecipeBook::builtin_default`].
    pub const DEFAULT_SEED: u64 = 20_250_501;

    fn empty() -> RecipeBook {
        RecipeBook {
            names: Vec::new(),
            by_name: HashMap::new(),
            recipes_of: Vec::new(),
            pair_result: HashMap::new(),
            pairs: Vec::new(),
            recipe_entries: 0,
        }
    }

    /// Number of entities.
    pub fn entity_count(&self) -> usize {
        self.names.len()
    }

    /// Number of recipes kept (one per result and ingredient pair; self-recipes dropped).
    pub fn recipe_count(&self) -> usize {
        self.recipe_entries
    }

    /// Number of distinct unordered ingredient pairs that combine into something.
    pub fn pair_count(&self) -> usize {
        self.pairs.len()
    }

    /// The name of entity `id`, if it exists.
    pub fn name(&self, id: u32) -> Option<&str> {
        self.names.get(id as usize).map(String::as_str)
    }

    /// The id of the entity called `name`, if any.
    pub fn id(&self, name: &str) -> Option<u32> {
        self.by_name.get(name).copied()
    }

    /// All entity names, indexed by id.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// The recipes `(a, b)` that make entity `id`, in source order (empty if none or unknown).
    pub fn recipes_for(&self, id: u32) -> &[(u32, u32)] {
        self.recipes_of
            .get(id as usize)
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    /// Whether `id` is a base entity (an entity no recipe makes).
    pub fn is_base(&self, id: u32) -> bool {
        self.recipes_for(id).is_empty()
    }

    /// What combining `a` and `b` yields (order does not matter), if anything.
    pub fn combine(&self, a: u32, b: u32) -> Option<u32> {
        self.pair_result.get(&pair_key(a, b)).copied()
    }

    /// Whether every recipe in the task's tree yields, when combined, the entity it stands for
    /// in the tree. False only for trees that use a pair listed for several results whose
    /// combination yields a different one (see [`RecipeBook`]).
    pub fn is_solvable(&self, task: &Task) -> bool {
        task.recipes
            .iter()
            .all(|&(a, b, result)| self.combine(a, b) == Some(result))
    }

    /// Enumerates every task whose recipe tree has `depth` intermediate levels, as the
    /// Wordcraft benchmark defines them.
    ///
    /// Depth 1: a goal and the two ingredients of one of its recipes (one task per recipe).
    /// Depth `d+1`: one base of a depth-`d` tree that has recipes is replaced by the
    /// ingredients of one of its recipes and becomes an intermediate; recipes that use the
    /// goal or an existing intermediate are skipped (cycles), and an ingredient already among
    /// the bases is not listed twice. Identical trees (same goal, bases, intermediates and
    /// recipe sequence) are listed once. Order: goals by id, then depth-first in recipe order.
    /// `depth == 0` gives no tasks. The count grows quickly with depth on dense books.
    pub fn tasks(&self, depth: u8) -> Vec<Task> {
        let mut out = Vec::new();
        if depth == 0 {
            return out;
        }
        let mut seen = HashSet::new();
        for goal in 0..self.names.len() as u32 {
            seen.clear();
            let mut expander = Expander {
                book: self,
                goal,
                target: depth as usize,
                seen: &mut seen,
                out: &mut out,
            };
            let mut intermediates = Vec::new();
            let mut recipes = Vec::new();
            expander.expand(&[goal], &mut intermediates, &mut recipes);
        }
        out
    }
}

const ONSETS: [&str; 24] = [
    "b", "br", "d", "dr", "f", "g", "gl", "h", "k", "kr", "l", "m", "n", "p", "pl", "r", "s", "sh",
    "st", "t", "th", "tr", "v", "z",
];
const VOWELS: [&str; 8] = ["a", "e", "i", "o", "u", "ai", "ea", "ou"];
const CODAS: [&str; 10] = ["", "", "", "n", "r", "l", "s", "m", "th", "x"];

/// A pseudo-word of `syllables` syllables, e.g. "brealom".
fn pseudo_word(rng: &mut SplitMix64, syllables: usize) -> String {
    let mut word = String::new();
    for _ in 0..syllables {
        word.push_str(ONSETS[rng.below_scaled(ONSETS.len())]);
        word.push_str(VOWELS[rng.below_scaled(VOWELS.len())]);
    }
    word.push_str(CODAS[rng.below_scaled(CODAS.len())]);
    word
}

fn unique_pseudo_word(rng: &mut SplitMix64, used: &mut HashSet<String>, short: bool) -> String {
    let mut attempt = 0usize;
    loop {
        // Lengthen words if collisions keep happening; this always terminates in practice
        // because the name space grows geometrically with the syllable count.
        let base = if short { 2 } else { 2 + (attempt % 2) };
        let syllables = base + attempt / 32;
        let word = pseudo_word(rng, syllables);
        if used.insert(word.clone()) {
            return word;
        }
        attempt += 1;
    }
}

/// Key identifying one task tree within a goal.
type TreeKey = (Vec<u32>, Vec<u32>, Vec<(u32, u32)>);

/// Depth-first task enumeration for one goal.
struct Expander<'a> {
    book: &'a RecipeBook,
    goal: u32,
    target: usize,
    seen: &'a mut HashSet<TreeKey>,
    out: &'a mut Vec<Task>,
}

impl Expander<'_> {
    fn expand(
        &mut self,
        bases: &[u32],
        intermediates: &mut Vec<u32>,
        recipes: &mut Vec<(u32, u32, u32)>,
    ) {
        for (i, &b) in bases.iter().enumerate() {
            let options = self.book.recipes_for(b);
            if options.is_empty() {
                continue;
            }
            let pushed = b != self.goal;
            if pushed {
                intermediates.push(b);
            }
            let level = intermediates.len() + 1;
            let rest: Vec<u32> = bases
                .iter()
                .enumerate()
                .filter(|&(j, _)| j != i)
                .map(|(_, &e)| e)
                .collect();
            for &(x, y) in options {
                let cyclic = |e: u32| e == self.goal || intermediates.contains(&e);
                if cyclic(x) || cyclic(y) {
                    continue;
                }
                let mut next = Vec::with_capacity(rest.len() + 2);
                if !rest.contains(&x) {
                    next.push(x);
                }
                if y != x && !rest.contains(&y) {
                    next.push(y);
                }
                next.extend_from_slice(&rest);
                recipes.push((x, y, b));
                if level == self.target {
                    self.emit(&next, intermediates, recipes);
                } else if level < self.target {
                    self.expand(&next, intermediates, recipes);
                }
                recipes.pop();
            }
            if pushed {
                intermediates.pop();
            }
        }
    }

    fn emit(&mut self, bases: &[u32], intermediates: &[u32], recipes: &[(u32, u32, u32)]) {
        let mut bases = bases.to_vec();
        bases.sort_unstable();
        let mut inter = intermediates.to_vec();
        inter.sort_unstable();
        let pairs: Vec<(u32, u32)> = recipes.iter().map(|&(a, b, _)| pair_key(a, b)).collect();
        if self.seen.insert((bases.clone(), inter.clone(), pairs)) {
            self.out.push(Task {
                goal: self.goal,
                bases,
                intermediates: inter,
                recipes: recipes.to_vec(),
                depth: self.target.min(u8::MAX as usize) as u8,
            });
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Tasks and splits
// ---------------------------------------------------------------------------------------------

/// One Wordcraft task: make `goal` from `bases` through a recipe tree.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Task {
    /// The entity to create.
    pub goal: u32,
    /// The entities on the table at the start (besides distractors), sorted by id.
    pub bases: Vec<u32>,
    /// Entities of the tree between the bases and the goal, sorted by id.
    pub intermediates: Vec<u32>,
    /// The recipes `(a, b, result)` of the tree, from the goal's recipe downwards.
    pub recipes: Vec<(u32, u32, u32)>,
    /// Depth of the tree (1 = the goal's own recipe only).
    pub depth: u8,
}

/// How [`split`] divides tasks into train and test. Ratios outside `[0, 1]` are clamped and
/// a NaN ratio counts as 1 (everything train); the train part gets `ceil(ratio * n)` items.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Split {
    /// Hold out a fraction of the book's distinct ingredient pairs; a task is a test task
    /// if any recipe of its tree uses a held-out pair.
    ByRecipe {
        /// Fraction of pairs kept for training.
        train_ratio: f64,
    },
    /// Hold out a fraction of the book's entities as goals; a task is a test task if its goal
    /// is held out.
    ByGoal {
        /// Fraction of entities kept as training goals.
        train_ratio: f64,
    },
    /// Split the given tasks themselves at random.
    ByTask {
        /// Fraction of tasks kept for training.
        train_ratio: f64,
    },
}

fn train_size(ratio: f64, n: usize) -> usize {
    let ratio = if ratio.is_nan() {
        1.0
    } else {
        ratio.clamp(0.0, 1.0)
    };
    ((ratio * n as f64).ceil() as usize).min(n)
}

/// Divides `tasks` into `(train, test)`, keeping the input order within each part.
///
/// Held-out recipes (by recipe) and goals (by goal) are drawn from the whole book, so the
/// same book and seed hold out the same recipes or goals whatever tasks are passed (for
/// example depth-1 and depth-2 tasks agree). Deterministic for a given seed.
pub fn split(book: &RecipeBook, tasks: &[Task], split: Split, seed: u64) -> (Vec<Task>, Vec<Task>) {
    let mut rng = SplitMix64::new(derive_seed(seed, 2));
    let is_test: Vec<bool> = match split {
        Split::ByRecipe { train_ratio } => {
            let mut pairs = book.pairs.clone();
            rng.shuffle(&mut pairs);
            let keep = train_size(train_ratio, pairs.len());
            let held_out: HashSet<(u32, u32)> =
                pairs.get(keep..).unwrap_or(&[]).iter().copied().collect();
            tasks
                .iter()
                .map(|t| {
                    t.recipes
                        .iter()
                        .any(|&(a, b, _)| held_out.contains(&pair_key(a, b)))
                })
                .collect()
        }
        Split::ByGoal { train_ratio } => {
            let mut goals: Vec<u32> = (0..book.entity_count() as u32).collect();
            rng.shuffle(&mut goals);
            let keep = train_size(train_ratio, goals.len());
            let held_out: HashSet<u32> = goals.get(keep..).unwrap_or(&[]).iter().copied().collect();
            tasks.iter().map(|t| held_out.contains(&t.goal)).collect()
        }
        Split::ByTask { train_ratio } => {
            let mut order: Vec<usize> = (0..tasks.len()).collect();
            rng.shuffle(&mut order);
            let keep = train_size(train_ratio, tasks.len());
            let mut flags = vec![false; tasks.len()];
            for &i in order.get(keep..).unwrap_or(&[]) {
                if let Some(flag) = flags.get_mut(i) {
                    *flag = true;
                }
            }
            flags
        }
    };
    let mut train = Vec::new();
    let mut test = Vec::new();
    for (task, &test_task) in tasks.iter().zip(is_test.iter()) {
        if test_task {
            test.push(task.clone());
        } else {
            train.push(task.clone());
        }
    }
    (train, test)
}

// ---------------------------------------------------------------------------------------------
// Environment
// ---------------------------------------------------------------------------------------------

/// What one accepted action did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StepEvent {
    /// The first entity of a pair was selected.
    Selected {
        /// The entity selected.
        entity: String,
    },
    /// The second entity was selected and the pair combined.
    Combined {
        /// The first entity of the pair.
        first: String,
        /// The second entity of the pair.
        second: String,
        /// What the pair yields, if anything.
        result: Option<String>,
        /// Whether the result was new and appended to the table.
        added: bool,
    },
    /// An action was skipped through [`WordcraftEnv::skip_step`].
    Skipped,
}

/// The result of an accepted action.
#[derive(Debug, Clone, PartialEq)]
pub struct StepOutcome {
    /// The observation after the action.
    pub observation: String,
    /// What the action did.
    pub event: StepEvent,
    /// 1.0 when this action created the goal, else 0.0.
    pub reward: f64,
    /// Whether the episode has ended.
    pub done: bool,
    /// Whether the goal has been created.
    pub success: bool,
}

/// An entity created during an episode and the actions that made it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Achievement {
    /// The entity's name.
    pub entity: String,
    /// Index of the first action needed to make it: the first selection of its pair, or
    /// earlier if an ingredient was itself created during the episode (its range is included).
    pub first_step: usize,
    /// Index of the action that completed the pair (the second selection).
    pub last_step: usize,
}

/// How the agent acts on a [`WordcraftEnv`] and what it sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Interface {
    /// The benchmark's own interface (trajdb's earlier default): one action selects one
    /// table slot (`select NAME` or `select N`), two selections combine; the observation is
    /// `Goal: create X` / `table: 0:a 1:b` / `selected: none`; the goal text is `create X`.
    #[default]
    Select,
    /// The reference agent's interface (Sarukkai et al.'s Wordcraft wrapper): one action
    /// names two table entities, parsed leniently ([`parse_pair`]); an action that does not
    /// name exactly two is refused and costs nothing. The observation lists the table with
    /// 1-based indices (`Ingredients on the table: 1:axe, 2:fish`); the goal text names the
    /// goal and states the step count and limit (see [`WordcraftEnv::goal_text`]).
    Combine,
}

/// The table slots a combine action names, in the order they appear in the text:
/// `Some((a, b))` when exactly two mentions are found (one name written twice counts twice),
/// else `None`.
///
/// Lenient by design (a model writes `fish, axe`, `Combine fish and axe.` or
/// `**fish** + **axe**`): names are matched ASCII case-insensitively as whole words (the
/// characters around a match are not letters or digits); where matches overlap, the longer
/// name wins (`fire truck` over `fire`). Indices are not accepted: the reference agent names
/// entities. Returns the number of mentions found in the error case.
pub fn parse_pair<S: AsRef<str>>(action: &str, table: &[S]) -> Result<(usize, usize), usize> {
    let text = action.to_ascii_lowercase();
    let bytes = text.as_bytes();
    let word = |b: u8| b.is_ascii_alphanumeric();
    // (start, end, slot) of every whole-word match.
    let mut found: Vec<(usize, usize, usize)> = Vec::new();
    for (slot, name) in table.iter().enumerate() {
        let name = name.as_ref().trim().to_ascii_lowercase();
        if name.is_empty() {
            continue;
        }
        let mut from = 0;
        while let Some(pos) = text.get(from..).and_then(|t| t.find(&name)) {
            let start = from + pos;
            let end = start + name.len();
            let before_ok = start == 0 || !bytes.get(start - 1).copied().is_some_and(word);
            let after_ok = !bytes.get(end).copied().is_some_and(word);
            if before_ok && after_ok {
                found.push((start, end, slot));
            }
            from = start + name.len().max(1);
        }
    }
    // Longer matches first; drop any match overlapping one already kept.
    found.sort_by(|a, b| (b.1 - b.0).cmp(&(a.1 - a.0)).then(a.0.cmp(&b.0)));
    let mut kept: Vec<(usize, usize, usize)> = Vec::new();
    for m in found {
        if kept.iter().all(|k| m.1 <= k.0 || m.0 >= k.1) {
            kept.push(m);
        }
    }
    kept.sort_by_key(|m| m.0);
    match kept.as_slice() {
        [a, b] => Ok((a.2, b.2)),
        other => Err(other.len()),
    }
}

/// One Wordcraft episode played through text actions.
///
/// The table starts with the task's bases plus distractors (entities that are not the goal,
/// a base or an intermediate, drawn without replacement), shuffled with the seed. An action
/// selects one table slot, by name (`select metal`) or by index (`select 1`); selecting the
/// same slot twice is allowed. After two selections the pair is combined: a result, if any
/// and not already on the table, is appended, and the selection clears. The episode ends when
/// the goal is created (success) or after `max(task depth, max_combinations)` combinations.
///
/// Action indices ("steps") count accepted actions from 0. A refused action
/// ([`ActionError`]) changes nothing and costs nothing; a caller that wants invalid actions
/// to cost calls [`WordcraftEnv::skip_step`] after the refusal.
#[derive(Debug, Clone)]
pub struct WordcraftEnv {
    book: Arc<RecipeBook>,
    task: Task,
    table: Vec<u32>,
    selected: Option<(usize, usize)>,
    combinations: usize,
    limit: usize,
    steps: usize,
    success: bool,
    created: Vec<(u32, usize, usize)>,
    interface: Interface,
}

impl WordcraftEnv {
    /// Starts an episode of `task` with `distractors` distractor entities (fewer if the book
    /// has fewer candidates) and a limit of `max(task.depth, max_combinations)` combinations.
    ///
    /// Fails if the task names an entity id the book does not have.
    pub fn new(
        book: Arc<RecipeBook>,
        task: Task,
        distractors: usize,
        max_combinations: usize,
        seed: u64,
    ) -> Result<WordcraftEnv, RecipeError> {
        let entity_count = book.entity_count();
        let ids = std::iter::once(task.goal)
            .chain(task.bases.iter().copied())
            .chain(task.intermediates.iter().copied())
            .chain(task.recipes.iter().flat_map(|&(a, b, r)| [a, b, r]));
        for id in ids {
            if id as usize >= entity_count {
                return Err(RecipeError::UnknownEntityId { id, entity_count });
            }
        }
        let mut rng = SplitMix64::new(derive_seed(seed, 3));
        let excluded: HashSet<u32> = std::iter::once(task.goal)
            .chain(task.bases.iter().copied())
            .chain(task.intermediates.iter().copied())
            .collect();
        let mut candidates: Vec<u32> = (0..entity_count as u32)
            .filter(|id| !excluded.contains(id))
            .collect();
        rng.shuffle(&mut candidates);
        candidates.truncate(distractors);
        let mut table: Vec<u32> = Vec::with_capacity(task.bases.len() + candidates.len());
        for &b in &task.bases {
            if !table.contains(&b) {
                table.push(b);
            }
        }
        table.extend(candidates);
        rng.shuffle(&mut table);
        let limit = max_combinations.max(task.depth as usize);
        Ok(WordcraftEnv {
            book,
            task,
            table,
            selected: None,
            combinations: 0,
            limit,
            steps: 0,
            success: false,
            created: Vec::new(),
            interface: Interface::Select,
        })
    }

    /// The same episode played through `interface` (call before the first action).
    pub fn with_interface(mut self, interface: Interface) -> Self {
        self.interface = interface;
        self
    }

    /// The interface this episode is played through.
    pub fn interface(&self) -> Interface {
        self.interface
    }

    /// The goal text the agent is given: `create X` ([`Interface::Select`]), or with
    /// [`Interface::Combine`] a sentence that also states how the game is played and the
    /// step limit, e.g. `Make cyborg from the ingredients. Each step combines exactly two
    /// entities; cyborg takes 2 steps and you have at most 4.`
    pub fn goal_text(&self) -> String {
        self.goal_text_for(self.goal_name())
    }

    /// [`WordcraftEnv::goal_text`] with another goal entity (hindsight relabelling; the
    /// number of steps it takes is then not stated, only the limit).
    pub fn goal_text_for(&self, goal: &str) -> String {
        match self.interface {
            Interface::Select => format!("create {goal}"),
            Interface::Combine if goal != self.goal_name() => format!(
                "Make {goal} from the ingredients. Each step combines exactly two entities; \
                 you have at most {} steps.",
                self.limit
            ),
            Interface::Combine => format!(
                "Make {goal} from the ingredients. Each step combines exactly two entities; \
                 {goal} takes {} step{} and you have at most {}.",
                self.task.depth,
                if self.task.depth == 1 { "" } else { "s" },
                self.limit
            ),
        }
    }

    /// What one action looks like, for the agent's prompt.
    pub fn action_space(&self) -> &'static str {
        match self.interface {
            Interface::Select => {
                "One action selects one table entity: `select NAME` (or `select N`, its slot \
                 number). Two selections are combined; a new entity is added to the table."
            }
            Interface::Combine => {
                "One action names the two table entities to combine, e.g. `fish, axe` (an \
                 entity may be combined with itself). A new entity is added to the table. An \
                 action that does not name exactly two entities on the table does nothing."
            }
        }
    }

    fn entity_name(&self, id: u32) -> &str {
        self.book.name(id).unwrap_or("?")
    }

    /// The task being played.
    pub fn task(&self) -> &Task {
        &self.task
    }

    /// The recipe book.
    pub fn book(&self) -> &Arc<RecipeBook> {
        &self.book
    }

    /// The goal entity's name.
    pub fn goal_name(&self) -> &str {
        self.entity_name(self.task.goal)
    }

    /// The table's entity names, by slot.
    pub fn table(&self) -> Vec<&str> {
        self.table.iter().map(|&id| self.entity_name(id)).collect()
    }

    /// The currently selected entity's name, if one is selected.
    pub fn selected(&self) -> Option<&str> {
        self.selected
            .and_then(|(slot, _)| self.table.get(slot))
            .map(|&id| self.entity_name(id))
    }

    /// The observation text, e.g.
    /// `Goal: create cyborg\ntable: 0:human 1:metal 2:fire 3:life\nselected: metal`
    /// (`selected: none` when nothing is selected); with [`Interface::Combine`]
    /// `Ingredients on the table: 1:human, 2:metal, 3:fire, 4:life` (1-based, no goal line:
    /// the goal text says it).
    pub fn observation(&self) -> String {
        if self.interface == Interface::Combine {
            let items: Vec<String> = self
                .table
                .iter()
                .enumerate()
                .map(|(i, &id)| format!("{}:{}", i + 1, self.entity_name(id)))
                .collect();
            return format!("Ingredients on the table: {}", items.join(", "));
        }
        let mut text = format!("Goal: create {}\ntable:", self.goal_name());
        for (slot, &id) in self.table.iter().enumerate() {
            text.push_str(&format!(" {slot}:{}", self.entity_name(id)));
        }
        text.push_str("\nselected: ");
        text.push_str(self.selected().unwrap_or("none"));
        text
    }

    /// The actions accepted now: `select NAME` for each table slot, in slot order (empty
    /// once the episode is over, and with [`Interface::Combine`], whose actions are pairs:
    /// the action space is described instead, see [`WordcraftEnv::action_space`]).
    pub fn valid_actions(&self) -> Vec<String> {
        if self.done() || self.interface == Interface::Combine {
            return Vec::new();
        }
        self.table
            .iter()
            .map(|&id| format!("select {}", self.entity_name(id)))
            .collect()
    }

    /// Whether the episode has ended (goal created or combination limit reached).
    pub fn done(&self) -> bool {
        self.success || self.combinations >= self.limit
    }

    /// Whether the goal has been created.
    pub fn success(&self) -> bool {
        self.success
    }

    /// Combinations made so far.
    pub fn combinations_used(&self) -> usize {
        self.combinations
    }

    /// The combination limit of this episode: `max(task depth, max_combinations)`.
    pub fn combination_limit(&self) -> usize {
        self.limit
    }

    /// Accepted actions so far (the index the next accepted action will get).
    pub fn steps_taken(&self) -> usize {
        self.steps
    }

    /// Names of the entities created during the episode (appended to the table), in order.
    pub fn achieved(&self) -> Vec<String> {
        self.created
            .iter()
            .map(|&(id, _, _)| self.entity_name(id).to_string())
            .collect()
    }

    /// The entities created during the episode, in order, with the range of action indices
    /// that made each one (for hindsight relabelling).
    pub fn achievements(&self) -> Vec<Achievement> {
        self.created
            .iter()
            .map(|&(id, first_step, last_step)| Achievement {
                entity: self.entity_name(id).to_string(),
                first_step,
                last_step,
            })
            .collect()
    }

    fn resolve_slot(&self, action: &str) -> Result<usize, ActionError> {
        let unrecognized = || ActionError::Unrecognized {
            action: action.to_string(),
        };
        let trimmed = action.trim();
        let verb_len = "select".len();
        let (verb, rest) = match (trimmed.get(..verb_len), trimmed.get(verb_len..)) {
            (Some(verb), Some(rest)) => (verb, rest),
            _ => return Err(unrecognized()),
        };
        if !verb.eq_ignore_ascii_case("select") || !rest.starts_with(char::is_whitespace) {
            return Err(unrecognized());
        }
        let arg = rest.trim();
        if arg.is_empty() {
            return Err(unrecognized());
        }
        let names: Vec<&str> = self.table();
        if let Some(slot) = names.iter().position(|n| *n == arg) {
            return Ok(slot);
        }
        if let Some(slot) = names.iter().position(|n| n.eq_ignore_ascii_case(arg)) {
            return Ok(slot);
        }
        if let Ok(slot) = arg.parse::<usize>() {
            if slot < self.table.len() {
                return Ok(slot);
            }
            return Err(ActionError::SlotOutOfRange {
                slot,
                table_len: self.table.len(),
            });
        }
        Err(ActionError::NotOnTable {
            name: arg.to_string(),
        })
    }

    /// Takes one action: `select NAME` (exact name first, then ASCII case-insensitive) or
    /// `select N` (slot index). Surrounding whitespace is ignored.
    ///
    /// Returns an [`ActionError`] and changes nothing if the action is not accepted; whether
    /// that costs the agent anything is the caller's choice (see [`WordcraftEnv::skip_step`]).
    pub fn step(&mut self, action: &str) -> Result<StepOutcome, ActionError> {
        if self.done() {
            return Err(ActionError::EpisodeOver);
        }
        if self.interface == Interface::Combine {
            let (a, b) =
                parse_pair(action, &self.table()).map_err(|named| ActionError::NotAPair {
                    action: action.to_string(),
                    named,
                })?;
            let step = self.steps;
            self.steps += 1;
            self.selected = None;
            let (event, reward) = self.mix(a, b, step, step);
            return Ok(StepOutcome {
                observation: self.observation(),
                event,
                reward,
                done: self.done(),
                success: self.success,
            });
        }
        let slot = self.resolve_slot(action)?;
        let step = self.steps;
        self.steps += 1;
        let mut reward = 0.0;
        let event = match self.selected.take() {
            None => {
                self.selected = Some((slot, step));
                StepEvent::Selected {
                    entity: self.table().get(slot).copied().unwrap_or("?").to_string(),
                }
            }
            Some((first_slot, first_step)) => {
                let (event, r) = self.mix(first_slot, slot, first_step, step);
                reward = r;
                event
            }
        };
        Ok(StepOutcome {
            observation: self.observation(),
            event,
            reward,
            done: self.done(),
            success: self.success,
        })
    }

    /// Combines table slots `first_slot` and `slot` (the pair's actions are `first_step` and
    /// `step`): appends a new result, records it, and returns the event and the reward.
    fn mix(
        &mut self,
        first_slot: usize,
        slot: usize,
        first_step: usize,
        step: usize,
    ) -> (StepEvent, f64) {
        let mut reward = 0.0;
        let a = self.table.get(first_slot).copied().unwrap_or(u32::MAX);
        let b = self.table.get(slot).copied().unwrap_or(u32::MAX);
        self.combinations += 1;
        let result = self.book.combine(a, b);
        let mut added = false;
        if let Some(r) = result {
            if !self.table.contains(&r) {
                let mut start = first_step;
                for ingredient in [a, b] {
                    if let Some(&(_, s, _)) =
                        self.created.iter().find(|&&(id, _, _)| id == ingredient)
                    {
                        start = start.min(s);
                    }
                }
                self.table.push(r);
                self.created.push((r, start, step));
                added = true;
            }
            if r == self.task.goal {
                self.success = true;
                reward = 1.0;
            }
        }
        let event = StepEvent::Combined {
            first: self.entity_name(a).to_string(),
            second: self.entity_name(b).to_string(),
            result: result.map(|r| self.entity_name(r).to_string()),
            added,
        };
        (event, reward)
    }

    /// Counts a wasted action, for callers that make invalid actions cost: it takes the next
    /// action index, clears the selection and uses up one combination (so repeated invalid
    /// actions end the episode).
    pub fn skip_step(&mut self) -> Result<StepOutcome, ActionError> {
        if self.done() {
            return Err(ActionError::EpisodeOver);
        }
        self.steps += 1;
        self.selected = None;
        self.combinations += 1;
        Ok(StepOutcome {
            observation: self.observation(),
            event: StepEvent::Skipped,
            reward: 0.0,
            done: self.done(),
            success: self.success,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// human + metal -> cyborg; fire + earth -> metal; life + clay -> human; plus extras.
    fn small_book() -> RecipeBook {
        let entities = [
            "fire", "earth", "water", "air", "life", "clay", "metal", "human", "cyborg", "steam",
            "mud",
        ];
        let recipes = [
            ("fire", "earth", "metal"),
            ("life", "clay", "human"),
            ("human", "metal", "cyborg"),
            ("fire", "water", "steam"),
            ("earth", "water", "mud"),
            ("mud", "fire", "clay"),
            ("water", "water", "water"),
        ];
        match RecipeBook::from_named_recipes(&entities, &recipes) {
            Ok(book) => book,
            Err(e) => panic!("small book: {e}"),
        }
    }

    fn id(book: &RecipeBook, name: &str) -> u32 {
        book.id(name).unwrap_or(u32::MAX)
    }

    fn cyborg_task(book: &RecipeBook) -> Task {
        let goal = id(book, "cyborg");
        book.tasks(1)
            .into_iter()
            .find(|t| t.goal == goal)
            .unwrap_or_else(|| panic!("no cyborg task"))
    }

    fn env(
        book: &RecipeBook,
        task: Task,
        distractors: usize,
        max: usize,
        seed: u64,
    ) -> WordcraftEnv {
        match WordcraftEnv::new(Arc::new(book.clone()), task, distractors, max, seed) {
            Ok(env) => env,
            Err(e) => panic!("env: {e}"),
        }
    }

    fn ok(outcome: Result<StepOutcome, ActionError>) -> StepOutcome {
        match outcome {
            Ok(o) => o,
            Err(e) => panic!("step refused: {e}"),
        }
    }

    fn alchemy2() -> Option<RecipeBook> {
        let path = match std::env::var("TRAJDB_ALCHEMY2") {
            Ok(p) if !p.is_empty() => p,
            _ => {
                eprintln!("TRAJDB_ALCHEMY2 is not set; skipping alchemy2 test");
                return None;
            }
        };
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) => panic!("cannot read {path}: {e}"),
        };
        match RecipeBook::from_alchemy2_json(&text) {
            Ok(book) => Some(book),
            Err(e) => panic!("cannot parse {path}: {e}"),
        }
    }

    #[test]
    fn self_recipes_are_dropped() {
        let book = small_book();
        let water = id(&book, "water");
        assert!(book.recipes_for(water).is_empty());
        assert_eq!(book.combine(water, water), None);
        assert_eq!(book.recipe_count(), 6);
    }

    #[test]
    fn combine_is_unordered() {
        let book = small_book();
        let (h, m, c) = (id(&book, "human"), id(&book, "metal"), id(&book, "cyborg"));
        assert_eq!(book.combine(h, m), Some(c));
        assert_eq!(book.combine(m, h), Some(c));
        assert_eq!(book.combine(h, h), None);
    }

    #[test]
    fn conflicting_pair_yields_later_result_in_file_order() {
        let json = r#"{"entities": {
            "zeta": {"id": 9, "recipes": [["a", "b"]]},
            "a": {"id": 1, "recipes": []},
            "b": {"id": 2, "recipes": []},
            "alpha": {"id": 0, "recipes": [["b", "a"]]}
        }}"#;
        let book = match RecipeBook::from_alchemy2_json(json) {
            Ok(b) => b,
            Err(e) => panic!("{e}"),
        };
        // File order, not alphabetical order and not the "id" field.
        assert_eq!(book.names(), &["zeta", "a", "b", "alpha"]);
        assert_eq!(book.combine(1, 2), Some(3));
        let tasks = book.tasks(1);
        assert_eq!(tasks.len(), 2);
        let solvable: Vec<bool> = tasks.iter().map(|t| book.is_solvable(t)).collect();
        assert_eq!(solvable, vec![false, true]);
    }

    #[test]
    fn bad_json_reports_line_and_column() {
        let err =
            RecipeBook::from_alchemy2_json("{\"entities\": {\n  \"a\": {\"recipes\": [}\n}}").err();
        match err {
            Some(RecipeError::Json { line, column, .. }) => {
                assert_eq!(line, 2);
                assert!(column > 0);
            }
            other => panic!("expected a JSON error, got {other:?}"),
        }
        let text = match err {
            Some(e) => e.to_string(),
            None => String::new(),
        };
        assert!(
            text.starts_with("invalid recipe JSON at line 2, column"),
            "{text}"
        );
        assert!(!text.contains('\n'));
    }

    #[test]
    fn wrong_shape_is_a_json_error() {
        let err = RecipeBook::from_alchemy2_json("{\"things\": {}}").err();
        assert!(
            matches!(&err, Some(RecipeError::Json { message, .. }) if message.contains("entities")),
            "{err:?}"
        );
    }

    #[test]
    fn unknown_ingredient_names_entity_recipe_and_ingredient() {
        let json = r#"{"entities": {
            "metal": {"id": 1, "recipes": []},
            "cyborg": {"id": 2, "recipes": [["metal", "metal"], ["metal", "humn"]]}
        }}"#;
        let err = RecipeBook::from_alchemy2_json(json).err();
        assert_eq!(
            err,
            Some(RecipeError::UnknownIngredient {
                entity: "cyborg".into(),
                recipe_index: 1,
                ingredient: "humn".into()
            })
        );
        let text = err.map(|e| e.to_string()).unwrap_or_default();
        assert_eq!(
            text,
            "entity \"cyborg\", recipe #1: unknown ingredient \"humn\""
        );
    }

    #[test]
    fn three_ingredient_recipe_and_duplicate_entity_are_errors() {
        let json = r#"{"entities": {"a": {"id": 1, "recipes": [["a", "a", "a"]]}}}"#;
        assert_eq!(
            RecipeBook::from_alchemy2_json(json).err(),
            Some(RecipeError::BadArity {
                entity: "a".into(),
                recipe_index: 0,
                found: 3
            })
        );
        let json = r#"{"entities": {"a": {"id": 1}, "a": {"id": 2}}}"#;
        assert_eq!(
            RecipeBook::from_alchemy2_json(json).err(),
            Some(RecipeError::DuplicateEntity { name: "a".into() })
        );
    }

    #[test]
    fn depth_one_tasks_are_one_per_recipe() {
        let book = small_book();
        let tasks = book.tasks(1);
        assert_eq!(tasks.len(), book.recipe_count());
        let task = cyborg_task(&book);
        let mut bases = vec![id(&book, "human"), id(&book, "metal")];
        bases.sort_unstable();
        assert_eq!(task.bases, bases);
        assert!(task.intermediates.is_empty());
        assert_eq!(task.depth, 1);
        assert!(book.tasks(0).is_empty());
    }

    #[test]
    fn depth_two_replaces_one_ingredient_and_skips_cycles() {
        let book = small_book();
        let cyborg = id(&book, "cyborg");
        let tasks: Vec<Task> = book
            .tasks(2)
            .into_iter()
            .filter(|t| t.goal == cyborg)
            .collect();
        // human -> life + clay, metal -> fire + earth.
        assert_eq!(tasks.len(), 2);
        for t in &tasks {
            assert_eq!(t.intermediates.len(), 1);
            assert_eq!(t.recipes.len(), 2);
            assert_eq!(t.depth, 2);
            assert!(!t.bases.contains(&t.intermediates[0]));
        }
        // clay <- mud + fire, mud <- earth + water: depth 3 tree for cyborg via human->clay.
        let deep = book.tasks(3);
        let clay = id(&book, "clay");
        let via_clay = deep
            .iter()
            .any(|t| t.goal == cyborg && t.intermediates.contains(&clay));
        assert!(via_clay);
        // A cycle: x <- y + b, y <- x + b. Depth 2 for x must skip y's recipe that uses x.
        let cyc =
            RecipeBook::from_named_recipes(&["x", "y", "b"], &[("y", "b", "x"), ("x", "b", "y")]);
        let cyc = match cyc {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(cyc.tasks(1).len(), 2);
        assert!(cyc.tasks(2).is_empty());
    }

    #[test]
    fn task_enumeration_is_deterministic() {
        let book = RecipeBook::builtin_default();
        assert_eq!(book.tasks(2), book.tasks(2));
    }

    #[test]
    fn builtin_book_is_deterministic_and_layered() {
        let a = RecipeBook::builtin(7);
        let b = RecipeBook::builtin(7);
        let c = RecipeBook::builtin(8);
        assert_eq!(a.names(), b.names());
        assert_eq!(a.tasks(1), b.tasks(1));
        assert_ne!(a.names(), c.names());
        assert!((300..=600).contains(&a.entity_count()));
        assert!((1500..=3000).contains(&a.recipe_count()));
        // Each recipe uses ingredients with smaller ids (shallower layers).
        for result in 0..a.entity_count() as u32 {
            for &(x, y) in a.recipes_for(result) {
                assert!(x < result && y < result);
            }
        }
        // Names are lowercase pseudo-words and unique.
        let unique: HashSet<&String> = a.names().iter().collect();
        assert_eq!(unique.len(), a.entity_count());
        let readable = |n: &String| n.len() >= 3 && n.chars().all(|ch| ch.is_ascii_lowercase());
        assert!(a.names().iter().all(readable));
        assert_eq!((0..6).filter(|&i| a.is_base(i)).count(), 6);
    }

    #[test]
    fn builtin_book_yields_at_least_2000_depth_two_tasks_all_solvable() {
        let book = RecipeBook::builtin_default();
        let d1 = book.tasks(1);
        let d2 = book.tasks(2);
        eprintln!(
            "builtin_default: {} entities, {} recipes, {} depth-1 tasks, {} depth-2 tasks",
            book.entity_count(),
            book.recipe_count(),
            d1.len(),
            d2.len()
        );
        assert_eq!(d1.len(), book.recipe_count());
        assert!(d2.len() >= 2000);
        assert!(d2.iter().all(|t| book.is_solvable(t)));
    }

    #[test]
    fn split_by_recipe_puts_every_task_using_a_held_out_recipe_in_test() {
        let book = RecipeBook::builtin_default();
        let d1 = book.tasks(1);
        let d2 = book.tasks(2);
        let split_kind = Split::ByRecipe { train_ratio: 0.8 };
        let (train1, test1) = split(&book, &d1, split_kind, 11);
        let (train2, test2) = split(&book, &d2, split_kind, 11);
        assert_eq!(train1.len() + test1.len(), d1.len());
        assert_eq!(train2.len() + test2.len(), d2.len());
        // Held-out pairs are exactly those of the depth-1 test tasks.
        let held: HashSet<(u32, u32)> = test1
            .iter()
            .map(|t| pair_key(t.recipes[0].0, t.recipes[0].1))
            .collect();
        let uses_held = |t: &Task| {
            t.recipes
                .iter()
                .any(|&(a, b, _)| held.contains(&pair_key(a, b)))
        };
        assert!(test2.iter().all(uses_held));
        assert!(!train2.iter().any(uses_held));
        let test_share = test1.len() as f64 / d1.len() as f64;
        assert!((0.15..0.25).contains(&test_share), "{test_share}");
        assert_eq!(split(&book, &d2, split_kind, 11), (train2, test2));
    }

    #[test]
    fn split_by_goal_keeps_goals_apart_and_by_task_respects_ratio() {
        let book = RecipeBook::builtin_default();
        let tasks = book.tasks(1);
        let (train, test) = split(&book, &tasks, Split::ByGoal { train_ratio: 0.7 }, 3);
        let train_goals: HashSet<u32> = train.iter().map(|t| t.goal).collect();
        assert!(test.iter().all(|t| !train_goals.contains(&t.goal)));
        assert!(!test.is_empty() && !train.is_empty());

        let (train, test) = split(&book, &tasks, Split::ByTask { train_ratio: 0.75 }, 3);
        assert_eq!(train.len(), (0.75 * tasks.len() as f64).ceil() as usize);
        assert_eq!(train.len() + test.len(), tasks.len());
        let (all, none) = split(
            &book,
            &tasks,
            Split::ByTask {
                train_ratio: f64::NAN,
            },
            3,
        );
        assert_eq!((all.len(), none.len()), (tasks.len(), 0));
        let (none, all) = split(&book, &tasks, Split::ByTask { train_ratio: -2.0 }, 3);
        assert_eq!((none.len(), all.len()), (0, tasks.len()));
    }

    #[test]
    fn observation_has_the_benchmark_format() {
        let book = small_book();
        let task = cyborg_task(&book);
        let mut e = env(&book, task, 0, 4, 1);
        let obs = e.observation();
        let lines: Vec<&str> = obs.lines().collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0], "Goal: create cyborg");
        assert!(lines[1] == "table: 0:human 1:metal" || lines[1] == "table: 0:metal 1:human");
        assert_eq!(lines[2], "selected: none");
        ok(e.step("select metal"));
        assert!(e.observation().ends_with("\nselected: metal"));
    }

    #[test]
    fn combining_appends_new_result_and_clears_selection() {
        let book = small_book();
        let metal = id(&book, "metal");
        let task = book
            .tasks(1)
            .into_iter()
            .find(|t| t.goal == metal)
            .unwrap_or_else(|| panic!("no metal task"));
        // Goal metal, bases fire + earth; make steam (fire + water) is impossible without
        // water, so combine fire + fire (nothing), then fire + earth (the goal).
        let mut e = env(&book, task, 0, 3, 5);
        let before = e.table().len();
        let out = ok(e.step("select fire"));
        assert!(matches!(out.event, StepEvent::Selected { ref entity } if entity == "fire"));
        let out = ok(e.step("select fire"));
        assert!(matches!(
            out.event,
            StepEvent::Combined {
                result: None,
                added: false,
                ..
            }
        ));
        assert_eq!(e.table().len(), before);
        assert_eq!(e.selected(), None);
        assert!(!out.done);
        ok(e.step("select fire"));
        let out = ok(e.step("select earth"));
        assert_eq!(e.table().len(), before + 1);
        assert_eq!(e.table().last().copied(), Some("metal"));
        assert!(out.done && out.success && e.success());
        assert_eq!(out.reward, 1.0);
        assert_eq!(e.step("select fire"), Err(ActionError::EpisodeOver));
    }

    #[test]
    fn success_only_on_goal() {
        let book = small_book();
        let cyborg = id(&book, "cyborg");
        let human = id(&book, "human");
        // Depth-2 task: cyborg <- human + metal, human <- life + clay.
        let task = book
            .tasks(2)
            .into_iter()
            .find(|t| t.goal == cyborg && t.intermediates == vec![human])
            .unwrap_or_else(|| panic!("no task"));
        let mut e = env(&book, task, 0, 2, 9);
        ok(e.step("select life"));
        let out = ok(e.step("select clay"));
        // Making an intermediate is not success.
        assert!(!out.success && !out.done);
        assert_eq!(out.reward, 0.0);
        assert_eq!(e.achieved(), vec!["human".to_string()]);
        ok(e.step("select human"));
        let out = ok(e.step("select metal"));
        assert!(out.success && out.done);
        assert_eq!(
            e.achieved(),
            vec!["human".to_string(), "cyborg".to_string()]
        );
        assert_eq!(
            e.achievements(),
            vec![
                Achievement {
                    entity: "human".into(),
                    first_step: 0,
                    last_step: 1
                },
                Achievement {
                    entity: "cyborg".into(),
                    first_step: 0,
                    last_step: 3
                },
            ]
        );
    }

    #[test]
    fn episode_ends_after_combination_limit() {
        let book = small_book();
        let task = cyborg_task(&book);
        // Limit is max(depth 1, 2) = 2 combinations.
        let mut e = env(&book, task.clone(), 0, 2, 1);
        assert_eq!(e.combination_limit(), 2);
        for _ in 0..3 {
            ok(e.step("select human"));
        }
        let out = ok(e.step("select human"));
        assert!(out.done && !out.success);
        assert_eq!(e.step("select metal"), Err(ActionError::EpisodeOver));
        assert!(e.valid_actions().is_empty());
        // The limit is never below the task depth.
        let e = env(&book, task, 0, 0, 1);
        assert_eq!(e.combination_limit(), 1);
    }

    #[test]
    fn invalid_actions_are_errors_that_change_nothing() {
        let book = small_book();
        let task = cyborg_task(&book);
        let mut e = env(&book, task, 0, 2, 1);
        let obs = e.observation();
        assert!(matches!(
            e.step("dance"),
            Err(ActionError::Unrecognized { .. })
        ));
        assert!(matches!(
            e.step("select"),
            Err(ActionError::Unrecognized { .. })
        ));
        assert!(matches!(
            e.step("selectmetal"),
            Err(ActionError::Unrecognized { .. })
        ));
        assert!(matches!(e.step("é"), Err(ActionError::Unrecognized { .. })));
        assert_eq!(
            e.step("select fire"),
            Err(ActionError::NotOnTable {
                name: "fire".into()
            })
        );
        assert_eq!(
            e.step("select 7"),
            Err(ActionError::SlotOutOfRange {
                slot: 7,
                table_len: 2
            })
        );
        assert_eq!(e.observation(), obs);
        assert_eq!(e.steps_taken(), 0);
        // Slot index, case-insensitive names and surrounding spaces are accepted.
        ok(e.step("  SELECT 1 "));
        ok(e.step("select HUMAN"));
        assert_eq!(e.steps_taken(), 2);
        // skip_step makes an invalid action cost a combination.
        let out = match e.skip_step() {
            Ok(o) => o,
            Err(err) => panic!("{err}"),
        };
        assert!(out.done);
        assert_eq!(e.skip_step().err(), Some(ActionError::EpisodeOver));
    }

    #[test]
    fn valid_actions_name_every_table_slot() {
        let book = small_book();
        let task = cyborg_task(&book);
        let e = env(&book, task, 3, 2, 4);
        let actions = e.valid_actions();
        assert_eq!(actions.len(), 5);
        for (action, name) in actions.iter().zip(e.table()) {
            assert_eq!(action, &format!("select {name}"));
        }
    }

    #[test]
    fn distractors_never_include_goal_bases_or_intermediates() {
        let book = RecipeBook::builtin_default();
        let tasks = book.tasks(2);
        let shared = Arc::new(book.clone());
        for (i, task) in tasks.iter().step_by(97).enumerate() {
            let e = match WordcraftEnv::new(shared.clone(), task.clone(), 8, 4, i as u64) {
                Ok(e) => e,
                Err(err) => panic!("{err}"),
            };
            let table: Vec<u32> = e.table().iter().filter_map(|n| book.id(n)).collect();
            assert_eq!(table.len(), task.bases.len() + 8);
            for b in &task.bases {
                assert!(table.contains(b));
            }
            let distractors: Vec<u32> = table
                .iter()
                .copied()
                .filter(|id| !task.bases.contains(id))
                .collect();
            assert_eq!(distractors.len(), 8);
            for d in distractors {
                assert_ne!(d, task.goal);
                assert!(!task.intermediates.contains(&d));
            }
        }
        // Asking for more distractors than exist gives all candidates, no panic.
        let small = small_book();
        let e = env(&small, cyborg_task(&small), 1000, 2, 0);
        assert_eq!(e.table().len(), small.entity_count() - 1);
    }

    #[test]
    fn same_seed_gives_same_episode_and_other_seeds_shuffle() {
        let book = RecipeBook::builtin_default();
        let task = book.tasks(2)[100].clone();
        let a = env(&book, task.clone(), 10, 4, 42);
        let b = env(&book, task.clone(), 10, 4, 42);
        assert_eq!(a.observation(), b.observation());
        let differs = (0..10u64).any(|s| env(&book, task.clone(), 10, 4, s).table() != a.table());
        assert!(differs);
        // Same actions, same outcomes.
        let mut a = a;
        let mut b = b;
        for action in a.valid_actions().iter().take(4) {
            assert_eq!(a.step(action), b.step(action));
        }
    }

    #[test]
    fn env_rejects_task_with_unknown_entity_id() {
        let book = small_book();
        let mut task = cyborg_task(&book);
        task.bases.push(999);
        let err = WordcraftEnv::new(Arc::new(book), task, 0, 2, 0).err();
        assert_eq!(
            err,
            Some(RecipeError::UnknownEntityId {
                id: 999,
                entity_count: 11
            })
        );
    }

    #[test]
    fn optimal_play_solves_builtin_tasks() {
        let book = Arc::new(RecipeBook::builtin_default());
        for task in book.tasks(2).into_iter().step_by(211) {
            let mut e = match WordcraftEnv::new(book.clone(), task.clone(), 5, 2, 1) {
                Ok(e) => e,
                Err(err) => panic!("{err}"),
            };
            // Make the intermediate first (the last recipe), then the goal.
            for &(a, b, _) in task.recipes.iter().rev() {
                let (na, nb) = (book.name(a).unwrap_or(""), book.name(b).unwrap_or(""));
                ok(e.step(&format!("select {na}")));
                ok(e.step(&format!("select {nb}")));
            }
            assert!(e.success(), "{task:?}");
            assert_eq!(
                e.achievements().last().map(|a| (a.first_step, a.last_step)),
                Some((0, 3))
            );
        }
    }

    #[test]
    fn alchemy2_task_counts_match_the_benchmark() {
        let Some(book) = alchemy2() else { return };
        assert_eq!(book.entity_count(), 700);
        assert_eq!(book.recipe_count(), 3417);
        let d1 = book.tasks(1);
        let d2 = book.tasks(2);
        let unsolvable1 = d1.iter().filter(|t| !book.is_solvable(t)).count();
        let unsolvable2 = d2.iter().filter(|t| !book.is_solvable(t)).count();
        let (train, test) = split(&book, &d2, Split::ByRecipe { train_ratio: 0.8 }, 0);
        eprintln!(
            "alchemy2: depth 1 {} tasks ({unsolvable1} unsolvable), depth 2 {} tasks \
             ({unsolvable2} unsolvable); by-recipe 0.8 split of depth 2: {} train, {} test",
            d1.len(),
            d2.len(),
            train.len(),
            test.len()
        );
        assert_eq!(d1.len(), 3417);
        assert_eq!(d2.len(), 35_280);
        assert!(test.len() > 8_000 && train.len() > 15_000);
    }
}

#[cfg(test)]
mod combine_tests {
    use super::*;

    /// fire + earth -> metal; life + clay -> human; human + metal -> cyborg;
    /// fire + fire -> sun (a self pair); "fire truck" shares a word with "fire".
    fn book() -> RecipeBook {
        let entities = [
            "fire",
            "earth",
            "life",
            "clay",
            "metal",
            "human",
            "cyborg",
            "sun",
            "fire truck",
        ];
        let recipes = [
            ("fire", "earth", "metal"),
            ("life", "clay", "human"),
            ("human", "metal", "cyborg"),
            ("fire", "fire", "sun"),
        ];
        match RecipeBook::from_named_recipes(&entities, &recipes) {
            Ok(b) => b,
            Err(e) => panic!("book: {e}"),
        }
    }

    fn task(book: &RecipeBook, goal: &str, depth: u8) -> Task {
        let g = book.id(goal).unwrap_or(u32::MAX);
        book.tasks(depth)
            .into_iter()
            .find(|t| t.goal == g)
            .unwrap_or_else(|| panic!("no {goal} task of depth {depth}"))
    }

    fn env(goal: &str, depth: u8) -> WordcraftEnv {
        let b = book();
        let t = task(&b, goal, depth);
        match WordcraftEnv::new(Arc::new(b), t, 0, 4, 7) {
            Ok(e) => e.with_interface(Interface::Combine),
            Err(e) => panic!("env: {e}"),
        }
    }

    #[test]
    fn combine_observation_lists_the_table_from_one_and_the_goal_states_the_step_limit() {
        let e = env("cyborg", 2);
        let table = e.table();
        let want: Vec<String> = table
            .iter()
            .enumerate()
            .map(|(i, n)| format!("{}:{n}", i + 1))
            .collect();
        assert_eq!(
            e.observation(),
            format!("Ingredients on the table: {}", want.join(", "))
        );
        assert_eq!(
            e.goal_text(),
            "Make cyborg from the ingredients. Each step combines exactly two entities; \
             cyborg takes 2 steps and you have at most 4."
        );
        assert!(e.valid_actions().is_empty());
        assert!(e.action_space().contains("two table entities"));
    }

    #[test]
    fn pair_parsing_is_lenient_whole_word_longest_first_and_needs_exactly_two() {
        let table = ["fire", "earth", "fire truck", "clay"];
        assert_eq!(parse_pair("fire, earth", &table), Ok((0, 1)));
        assert_eq!(parse_pair("Combine EARTH and fire.", &table), Ok((1, 0)));
        assert_eq!(parse_pair("**clay** + **fire truck**", &table), Ok((3, 2)));
        assert_eq!(parse_pair("fire and fire", &table), Ok((0, 0)));
        // "firetruck" and "fireworks" are other words; "fire truck" is not two mentions.
        assert_eq!(parse_pair("fireworks, earth", &table), Err(1));
        assert_eq!(parse_pair("fire truck", &table), Err(1));
        assert_eq!(parse_pair("fire, earth, clay", &table), Err(3));
        assert_eq!(parse_pair("", &table), Err(0));
        assert_eq!(parse_pair("1, 2", &table), Err(0));
    }

    #[test]
    fn an_unparseable_combine_action_costs_nothing_and_a_pair_costs_one_combination() {
        let mut e = env("metal", 1);
        let before = e.observation();
        for bad in ["select fire", "fire", "earth, earth, fire", "water, fire"] {
            assert!(
                matches!(e.step(bad), Err(ActionError::NotAPair { .. })),
                "{bad}"
            );
        }
        assert_eq!(e.observation(), before);
        assert_eq!((e.combinations_used(), e.steps_taken()), (0, 0));
        // Through the agent's Environment trait too: refused, no combination used.
        crate::Environment::step(&mut e, "nonsense").unwrap_or_else(|x| panic!("{x}"));
        assert_eq!(e.combinations_used(), 0);
        let out = e.step("earth and fire").unwrap_or_else(|x| panic!("{x}"));
        assert!(out.success && out.done);
        assert_eq!((e.combinations_used(), e.steps_taken()), (1, 1));
        assert!(e.observation().ends_with(", 3:metal"));
        assert_eq!(e.achievements()[0].first_step, 0);
    }

    #[test]
    fn combine_interface_reaches_a_depth_two_goal_in_two_actions() {
        let mut e = env("cyborg", 2);
        let a = e.step("life, clay").unwrap_or_else(|x| panic!("{x}"));
        assert!(matches!(a.event, StepEvent::Combined { added: true, .. }));
        let b = e.step("human and metal").unwrap_or_else(|x| panic!("{x}"));
        assert!(b.success);
        let names: Vec<(String, usize, usize)> = e
            .achievements()
            .into_iter()
            .map(|x| (x.entity, x.first_step, x.last_step))
            .collect();
        assert_eq!(names, vec![("human".into(), 0, 0), ("cyborg".into(), 0, 1)]);
    }
}
