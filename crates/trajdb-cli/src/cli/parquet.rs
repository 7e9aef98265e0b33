//! Parquet export and import (cargo feature `parquet`): one row per trajectory.
//!
//! Columns (the README documents them): `id` u64; `task`, `env`, `goal`, `plan`,
//! `final_observation` strings; `category` string or null; `steps` a list of structs
//! {observation, reasoning, action: string, reward: f64 or null}; `success` bool or null;
//! `reward` f64 or null; `meta` a map string to string; `provenance_kind` string,
//! `provenance_parent` u64 or null, `provenance_start`/`provenance_end` u32 or null;
//! `created_ms` i64; one `key_NAME` column per trajectory-level key space (fixed-size list of
//! f32, null when the trajectory has no key there) and one `step_key_NAME` column per
//! step-level space (a list of fixed-size lists of f32, one per step). `--with-utility` adds
//! `retrievals`, `episodes`, `labelled_retrievals`, `success_retrievals` (u64) and `q` (f64 or
//! null). `--format chat` writes `id` and `messages` (a list of {role, content} structs)
//! instead. The file's key-value metadata `trajdb_spaces` holds the key-space header (the JSON
//! `export --with-spaces` writes first), so `import` rebuilds the key spaces exactly.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use arrow_array::builder::{
    BooleanBuilder, FixedSizeListBuilder, Float32Builder, Float64Builder, Int64Builder,
    ListBuilder, MapBuilder, StringBuilder, StructBuilder, UInt32Builder, UInt64Builder,
};
use arrow_array::cast::AsArray;
use arrow_array::types::{Float32Type, Float64Type, Int64Type, UInt32Type, UInt64Type};
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Fields, Schema};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;
use trajdb::export::chat_example;
use trajdb::jsonl::SpacesHeader;
use trajdb::{Database, Level, Outcome, Provenance, ProvenanceKind, SpaceDef, Step, Trajectory};

use super::CliResult;

/// Rows per record batch (and Parquet row group).
const BATCH_ROWS: usize = 4096;
/// The key of the key-space header in the file's metadata.
pub const SPACES_KEY: &str = "trajdb_spaces";

/// What to write.
pub struct ExportOpts {
    /// `messages` instead of the trajectory columns.
    pub chat: bool,
    /// Add the usage counters and Q.
    pub with_utility: bool,
    /// Only successful trajectories.
    pub success_only: bool,
}

fn step_fields() -> Fields {
    Fields::from(vec![
        Field::new("observation", DataType::Utf8, false),
        Field::new("reasoning", DataType::Utf8, false),
        Field::new("action", DataType::Utf8, false),
        Field::new("reward", DataType::Float64, true),
    ])
}

fn message_fields() -> Fields {
    Fields::from(vec![
        Field::new("role", DataType::Utf8, false),
        Field::new("content", DataType::Utf8, false),
    ])
}

fn vector_type(dims: u32) -> CliResult<DataType> {
    let n = i32::try_from(dims).map_err(|_| format!("{dims} dimensions do not fit Parquet"))?;
    Ok(DataType::FixedSizeList(
        Arc::new(Field::new("item", DataType::Float32, false)),
        n,
    ))
}

/// The output columns' builders, one row per trajectory.
struct Columns {
    chat: bool,
    spaces: Vec<SpaceDef>,
    id: UInt64Builder,
    origin: UInt64Builder,
    origin_id: UInt64Builder,
    task: StringBuilder,
    env: StringBuilder,
    category: StringBuilder,
    goal: StringBuilder,
    plan: StringBuilder,
    steps: ListBuilder<StructBuilder>,
    final_observation: StringBuilder,
    success: BooleanBuilder,
    reward: Float64Builder,
    meta: MapBuilder<StringBuilder, StringBuilder>,
    prov_kind: StringBuilder,
    prov_parent: UInt64Builder,
    prov_start: UInt32Builder,
    prov_end: UInt32Builder,
    created: Int64Builder,
    keys: Vec<FixedSizeListBuilder<Float32Builder>>,
    step_keys: Vec<ListBuilder<FixedSizeListBuilder<Float32Builder>>>,
    utility: Option<[UInt64Builder; 4]>,
    q: Float64Builder,
    messages: ListBuilder<StructBuilder>,
}

fn dims_i32(s: &SpaceDef) -> i32 {
    i32::try_from(s.dims).unwrap_or(i32::MAX)
}

impl Columns {
    fn new(spaces: &[SpaceDef], chat: bool, with_utility: bool) -> Columns {
        let vector_field =
            |s: &SpaceDef| Field::new("item", vector_type(s.dims).unwrap_or(DataType::Null), true);
        Columns {
            chat,
            spaces: spaces.to_vec(),
            id: UInt64Builder::new(),
            origin: UInt64Builder::new(),
            origin_id: UInt64Builder::new(),
            task: StringBuilder::new(),
            env: StringBuilder::new(),
            category: StringBuilder::new(),
            goal: StringBuilder::new(),
            plan: StringBuilder::new(),
            steps: ListBuilder::new(StructBuilder::from_fields(step_fields(), 0))
                .with_field(Field::new("item", DataType::Struct(step_fields()), false)),
            final_observation: StringBuilder::new(),
            success: BooleanBuilder::new(),
            reward: Float64Builder::new(),
            meta: MapBuilder::new(None, StringBuilder::new(), StringBuilder::new()),
            prov_kind: StringBuilder::new(),
            prov_parent: UInt64Builder::new(),
            prov_start: UInt32Builder::new(),
            prov_end: UInt32Builder::new(),
            created: Int64Builder::new(),
            keys: spaces
                .iter()
                .filter(|s| s.level == Level::Trajectory)
                .map(|s| {
                    FixedSizeListBuilder::new(Float32Builder::new(), dims_i32(s))
                        .with_field(Field::new("item", DataType::Float32, false))
                })
                .collect(),
            step_keys: spaces
                .iter()
                .filter(|s| s.level == Level::Step)
                .map(|s| {
                    ListBuilder::new(
                        FixedSizeListBuilder::new(Float32Builder::new(), dims_i32(s))
                            .with_field(Field::new("item", DataType::Float32, false)),
                    )
                    .with_field(vector_field(s))
                })
                .collect(),
            utility: with_utility.then(|| {
                [
                    UInt64Builder::new(),
                    UInt64Builder::new(),
                    UInt64Builder::new(),
                    UInt64Builder::new(),
                ]
            }),
            q: Float64Builder::new(),
            messages: ListBuilder::new(StructBuilder::from_fields(message_fields(), 0)).with_field(
                Field::new("item", DataType::Struct(message_fields()), false),
            ),
        }
    }

    fn push(
        &mut self,
        t: &Trajectory,
        u: &trajdb::Utility,
        origin: trajdb::Origin,
    ) -> CliResult<bool> {
        let id = t.id.unwrap_or_default();
        if self.chat {
            let Some(ex) = chat_example(t) else {
                return Ok(false);
            };
            self.id.append_value(id);
            let list = self.messages.values();
            for m in &ex.messages {
                let role = serde_json::to_value(m.role)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default();
                string_field(list, 0).append_value(role);
                string_field(list, 1).append_value(&m.content);
                list.append(true);
            }
            self.messages.append(true);
        } else {
            self.id.append_value(id);
            self.origin.append_value(origin.db);
            self.origin_id.append_value(origin.id);
            self.task.append_value(&t.task);
            self.env.append_value(&t.env);
            self.category.append_option(t.category.as_deref());
            self.goal.append_value(&t.goal);
            self.plan.append_value(&t.plan);
            let steps = self.steps.values();
            for s in &t.steps {
                string_field(steps, 0).append_value(&s.observation);
                string_field(steps, 1).append_value(&s.reasoning);
                string_field(steps, 2).append_value(&s.action);
                if let Some(b) = steps.field_builder::<Float64Builder>(3) {
                    b.append_option(s.reward);
                }
                steps.append(true);
            }
            self.steps.append(true);
            self.final_observation.append_value(&t.final_observation);
            self.success.append_option(t.outcome.success);
            self.reward.append_option(t.outcome.reward);
            for (k, v) in &t.meta {
                self.meta.keys().append_value(k);
                self.meta.values().append_value(v);
            }
            self.meta
                .append(true)
                .map_err(|e| format!("cannot build the meta column: {e}"))?;
            let kind = serde_json::to_value(t.provenance.kind)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            self.prov_kind.append_value(kind);
            self.prov_parent.append_option(t.provenance.parent);
            self.prov_start
                .append_option(t.provenance.steps.map(|s| s.0));
            self.prov_end.append_option(t.provenance.steps.map(|s| s.1));
            self.created.append_value(t.created_ms);
            let traj_spaces = self.spaces.iter().filter(|s| s.level == Level::Trajectory);
            for (b, s) in self.keys.iter_mut().zip(traj_spaces) {
                match t.keys.get(&s.name) {
                    Some(v) => {
                        b.values().append_slice(v);
                        b.append(true);
                    }
                    None => {
                        for _ in 0..s.dims {
                            b.values().append_value(0.0);
                        }
                        b.append(false);
                    }
                }
            }
            let step_spaces = self.spaces.iter().filter(|s| s.level == Level::Step);
            for (b, s) in self.step_keys.iter_mut().zip(step_spaces) {
                match t.step_keys.get(&s.name) {
                    Some(vs) => {
                        for v in vs {
                            b.values().values().append_slice(v);
                            b.values().append(true);
                        }
                        b.append(true);
                    }
                    None => b.append(false),
                }
            }
        }
        if let Some(u8s) = &mut self.utility {
            u8s[0].append_value(u.retrievals);
            u8s[1].append_value(u.episodes);
            u8s[2].append_value(u.labelled_retrievals);
            u8s[3].append_value(u.success_retrievals);
            self.q.append_option(u.q());
        }
        Ok(true)
    }

    /// The rows so far as a batch (the builders start afresh).
    fn finish(&mut self) -> CliResult<RecordBatch> {
        let mut fields: Vec<Field> = Vec::new();
        let mut cols: Vec<ArrayRef> = Vec::new();
        let mut add = |f: Field, a: ArrayRef| {
            fields.push(f);
            cols.push(a);
        };
        add(
            Field::new("id", DataType::UInt64, false),
            Arc::new(self.id.finish()),
        );
        if self.chat {
            let a = self.messages.finish();
            add(
                Field::new("messages", a.data_type().clone(), false),
                Arc::new(a),
            );
        } else {
            // Where the trajectory was first written (origin id, id there): its identity
            // across databases, which a fleet's usage exports name it by.
            for (name, b) in [
                ("origin", &mut self.origin),
                ("origin_id", &mut self.origin_id),
            ] {
                add(
                    Field::new(name, DataType::UInt64, false),
                    Arc::new(b.finish()),
                );
            }
            for (name, b) in [("task", &mut self.task), ("env", &mut self.env)] {
                add(
                    Field::new(name, DataType::Utf8, false),
                    Arc::new(b.finish()),
                );
            }
            add(
                Field::new("category", DataType::Utf8, true),
                Arc::new(self.category.finish()),
            );
            for (name, b) in [("goal", &mut self.goal), ("plan", &mut self.plan)] {
                add(
                    Field::new(name, DataType::Utf8, false),
                    Arc::new(b.finish()),
                );
            }
            let a = self.steps.finish();
            add(
                Field::new("steps", a.data_type().clone(), false),
                Arc::new(a),
            );
            add(
                Field::new("final_observation", DataType::Utf8, false),
                Arc::new(self.final_observation.finish()),
            );
            add(
                Field::new("success", DataType::Boolean, true),
                Arc::new(self.success.finish()),
            );
            add(
                Field::new("reward", DataType::Float64, true),
                Arc::new(self.reward.finish()),
            );
            let a = self.meta.finish();
            add(
                Field::new("meta", a.data_type().clone(), false),
                Arc::new(a),
            );
            add(
                Field::new("provenance_kind", DataType::Utf8, false),
                Arc::new(self.prov_kind.finish()),
            );
            add(
                Field::new("provenance_parent", DataType::UInt64, true),
                Arc::new(self.prov_parent.finish()),
            );
            add(
                Field::new("provenance_start", DataType::UInt32, true),
                Arc::new(self.prov_start.finish()),
            );
            add(
                Field::new("provenance_end", DataType::UInt32, true),
                Arc::new(self.prov_end.finish()),
            );
            add(
                Field::new("created_ms", DataType::Int64, false),
                Arc::new(self.created.finish()),
            );
            let traj: Vec<&SpaceDef> = self
                .spaces
                .iter()
                .filter(|s| s.level == Level::Trajectory)
                .collect();
            for (b, s) in self.keys.iter_mut().zip(traj) {
                let a = b.finish();
                add(
                    Field::new(format!("key_{}", s.name), a.data_type().clone(), true),
                    Arc::new(a),
                );
            }
            let step: Vec<&SpaceDef> = self
                .spaces
                .iter()
                .filter(|s| s.level == Level::Step)
                .collect();
            for (b, s) in self.step_keys.iter_mut().zip(step) {
                let a = b.finish();
                add(
                    Field::new(format!("step_key_{}", s.name), a.data_type().clone(), true),
                    Arc::new(a),
                );
            }
        }
        if let Some(u) = &mut self.utility {
            let names = [
                "retrievals",
                "episodes",
                "labelled_retrievals",
                "success_retrievals",
            ];
            for (name, b) in names.iter().zip(u.iter_mut()) {
                add(
                    Field::new(*name, DataType::UInt64, false),
                    Arc::new(b.finish()),
                );
            }
            add(
                Field::new("q", DataType::Float64, true),
                Arc::new(self.q.finish()),
            );
        }
        RecordBatch::try_new(Arc::new(Schema::new(fields)), cols)
            .map_err(|e| format!("cannot build a Parquet batch: {e}").into())
    }
}

fn string_field(s: &mut StructBuilder, i: usize) -> &mut StringBuilder {
    s.field_builder::<StringBuilder>(i)
        .unwrap_or_else(|| unreachable!("field {i} is a string builder by construction"))
}

/// Writes the database's trajectories to `path` as Parquet; returns the rows written and the
/// trajectories skipped (chat: those without steps).
pub fn export(
    db: &Database,
    path: &Path,
    o: &ExportOpts,
    progress: &super::progress::Progress,
) -> CliResult<(u64, u64)> {
    let spaces = db.spaces();
    let header = serde_json::to_string(&SpacesHeader {
        trajdb_spaces: spaces.clone(),
    })
    .map_err(|e| format!("cannot encode the key spaces: {e}"))?;
    let mut cols = Columns::new(&spaces, o.chat, o.with_utility);
    let schema = cols.finish()?.schema();
    let tmp = path.with_extension("parquet.partial");
    let file = File::create(&tmp).map_err(|e| format!("cannot create {}: {e}", tmp.display()))?;
    let props = WriterProperties::builder()
        .set_compression(parquet::basic::Compression::SNAPPY)
        .build();
    let wfail = |e: parquet::errors::ParquetError| format!("cannot write {}: {e}", path.display());
    let mut w = ArrowWriter::try_new(file, schema, Some(props)).map_err(wfail)?;
    if !o.chat {
        w.append_key_value_metadata(KeyValue::new(SPACES_KEY.to_string(), header));
    }
    let (mut rows, mut skipped, mut pending) = (0u64, 0u64, 0usize);
    for id in db.ids() {
        progress.inc(1);
        let t = db.get(id)?;
        if o.success_only && t.outcome.success != Some(true) {
            continue;
        }
        let u = db.utility(id);
        let origin = db.trajectory_origin(id).unwrap_or_default();
        if cols.push(&t, &u, origin)? {
            rows += 1;
            pending += 1;
        } else {
            skipped += 1;
        }
        if pending == BATCH_ROWS {
            w.write(&cols.finish()?).map_err(wfail)?;
            pending = 0;
        }
    }
    if pending > 0 {
        w.write(&cols.finish()?).map_err(wfail)?;
    }
    w.close().map_err(wfail)?;
    std::fs::rename(&tmp, path)
        .map_err(|e| format!("cannot rename {} to {}: {e}", tmp.display(), path.display()))?;
    Ok((rows, skipped))
}

/// Reads a trajdb Parquet export as JSONL: the key-space header line (from the file's
/// metadata, when present), then one record a line.
pub fn read_as_jsonl(path: &Path) -> CliResult<Vec<u8>> {
    let shown = path.display().to_string();
    let bad = |what: String| format!("{shown}: {what}; nothing was imported");
    let file = File::open(path).map_err(|e| format!("cannot open {shown}: {e}"))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(|e| bad(format!("cannot read it as Parquet ({e})")))?;
    let mut out = Vec::new();
    let header = builder
        .metadata()
        .file_metadata()
        .key_value_metadata()
        .and_then(|kv| kv.iter().find(|k| k.key == SPACES_KEY))
        .and_then(|k| k.value.clone());
    if let Some(h) = &header {
        out.extend_from_slice(h.as_bytes());
        out.push(b'\n');
    }
    let schema = builder.schema().clone();
    for required in ["goal", "steps"] {
        if schema.field_with_name(required).is_err() {
            let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
            return Err(bad(format!(
                "not a trajdb trajectory export: no column `{required}` (it has: {})",
                names.join(", ")
            ))
            .into());
        }
    }
    let reader = builder
        .build()
        .map_err(|e| bad(format!("cannot read it as Parquet ({e})")))?;
    let mut row = 0usize;
    for batch in reader {
        let batch = batch.map_err(|e| bad(format!("cannot read row group ({e})")))?;
        for i in 0..batch.num_rows() {
            row += 1;
            let t = row_to_trajectory(&batch, i).map_err(|e| bad(format!("row {row}: {e}")))?;
            let line = serde_json::to_string(&t)
                .map_err(|e| bad(format!("row {row}: cannot encode ({e})")))?;
            out.extend_from_slice(line.as_bytes());
            out.push(b'\n');
        }
    }
    Ok(out)
}

/// Column `name` of `b`, or an error naming it.
fn col<'a>(b: &'a RecordBatch, name: &str) -> Result<&'a ArrayRef, String> {
    b.column_by_name(name)
        .ok_or_else(|| format!("no column `{name}`"))
}

fn wrong(name: &str, a: &dyn Array) -> String {
    format!(
        "column `{name}` has type {}, not the type trajdb writes",
        a.data_type()
    )
}

fn opt_string(b: &RecordBatch, name: &str, i: usize) -> Result<Option<String>, String> {
    let Some(a) = b.column_by_name(name) else {
        return Ok(None);
    };
    let s = a
        .as_string_opt::<i32>()
        .ok_or_else(|| wrong(name, a.as_ref()))?;
    Ok((!s.is_null(i)).then(|| s.value(i).to_string()))
}

fn string(b: &RecordBatch, name: &str, i: usize) -> Result<String, String> {
    Ok(opt_string(b, name, i)?.unwrap_or_default())
}

fn opt_prim<T: arrow_array::ArrowPrimitiveType>(
    b: &RecordBatch,
    name: &str,
    i: usize,
) -> Result<Option<T::Native>, String> {
    let Some(a) = b.column_by_name(name) else {
        return Ok(None);
    };
    let p = a
        .as_primitive_opt::<T>()
        .ok_or_else(|| wrong(name, a.as_ref()))?;
    Ok((!p.is_null(i)).then(|| p.value(i)))
}

fn floats(a: &dyn Array, name: &str) -> Result<Vec<f32>, String> {
    let p = a
        .as_primitive_opt::<Float32Type>()
        .ok_or_else(|| wrong(name, a))?;
    Ok(p.values().to_vec())
}

fn row_to_trajectory(b: &RecordBatch, i: usize) -> Result<Trajectory, String> {
    let steps_col = col(b, "steps")?;
    let steps_list = steps_col
        .as_list_opt::<i32>()
        .ok_or_else(|| wrong("steps", steps_col.as_ref()))?;
    let mut steps = Vec::new();
    if !steps_list.is_null(i) {
        let v = steps_list.value(i);
        let st = v
            .as_struct_opt()
            .ok_or_else(|| wrong("steps", steps_col.as_ref()))?;
        let field = |n: &str| -> Result<Vec<String>, String> {
            let Some(c) = st.column_by_name(n) else {
                return Ok(vec![String::new(); st.len()]);
            };
            let s = c
                .as_string_opt::<i32>()
                .ok_or_else(|| wrong(&format!("steps.{n}"), c.as_ref()))?;
            Ok((0..s.len())
                .map(|k| {
                    if s.is_null(k) {
                        String::new()
                    } else {
                        s.value(k).to_string()
                    }
                })
                .collect())
        };
        let (obs, rea, act) = (field("observation")?, field("reasoning")?, field("action")?);
        let rewards: Vec<Option<f64>> = match st.column_by_name("reward") {
            None => vec![None; st.len()],
            Some(c) => {
                let p = c
                    .as_primitive_opt::<Float64Type>()
                    .ok_or_else(|| wrong("steps.reward", c.as_ref()))?;
                (0..p.len())
                    .map(|k| (!p.is_null(k)).then(|| p.value(k)))
                    .collect()
            }
        };
        for k in 0..st.len() {
            steps.push(Step {
                observation: obs[k].clone(),
                reasoning: rea[k].clone(),
                action: act[k].clone(),
                reward: rewards[k],
            });
        }
    }
    let mut meta = BTreeMap::new();
    if let Some(a) = b.column_by_name("meta") {
        let m = a.as_map_opt().ok_or_else(|| wrong("meta", a.as_ref()))?;
        if !m.is_null(i) {
            let entries = m.value(i);
            let keys = entries
                .column(0)
                .as_string_opt::<i32>()
                .ok_or_else(|| wrong("meta", a.as_ref()))?;
            let values = entries
                .column(1)
                .as_string_opt::<i32>()
                .ok_or_else(|| wrong("meta", a.as_ref()))?;
            for k in 0..keys.len() {
                let v = if values.is_null(k) {
                    ""
                } else {
                    values.value(k)
                };
                meta.insert(keys.value(k).to_string(), v.to_string());
            }
        }
    }
    let kind = match opt_string(b, "provenance_kind", i)?.as_deref() {
        None | Some("self_generated") => ProvenanceKind::SelfGenerated,
        Some("imported") => ProvenanceKind::Imported,
        Some("relabelled") => ProvenanceKind::Relabelled,
        Some(other) => {
            return Err(format!(
                "provenance_kind {other:?} is not self_generated, imported or relabelled"
            ))
        }
    };
    let start = opt_prim::<UInt32Type>(b, "provenance_start", i)?;
    let end = opt_prim::<UInt32Type>(b, "provenance_end", i)?;
    let mut keys = BTreeMap::new();
    let mut step_keys = BTreeMap::new();
    for f in b.schema().fields() {
        let name = f.name();
        let Some(a) = b.column_by_name(name) else {
            continue;
        };
        if let Some(space) = name.strip_prefix("step_key_") {
            let l = a
                .as_list_opt::<i32>()
                .ok_or_else(|| wrong(name, a.as_ref()))?;
            if l.is_null(i) {
                continue;
            }
            let v = l.value(i);
            let fl = v
                .as_fixed_size_list_opt()
                .ok_or_else(|| wrong(name, a.as_ref()))?;
            let mut vs = Vec::with_capacity(fl.len());
            for k in 0..fl.len() {
                vs.push(floats(fl.value(k).as_ref(), name)?);
            }
            step_keys.insert(space.to_string(), vs);
        } else if let Some(space) = name.strip_prefix("key_") {
            let fl = a
                .as_fixed_size_list_opt()
                .ok_or_else(|| wrong(name, a.as_ref()))?;
            if !fl.is_null(i) {
                keys.insert(space.to_string(), floats(fl.value(i).as_ref(), name)?);
            }
        }
    }
    let goal = opt_string(b, "goal", i)?.ok_or("goal is null")?;
    Ok(Trajectory {
        id: opt_prim::<UInt64Type>(b, "id", i)?,
        task: string(b, "task", i)?,
        env: string(b, "env", i)?,
        category: opt_string(b, "category", i)?,
        goal,
        plan: string(b, "plan", i)?,
        steps,
        final_observation: string(b, "final_observation", i)?,
        outcome: Outcome {
            success: match b.column_by_name("success") {
                None => None,
                Some(a) => {
                    let s = a
                        .as_boolean_opt()
                        .ok_or_else(|| wrong("success", a.as_ref()))?;
                    (!s.is_null(i)).then(|| s.value(i))
                }
            },
            reward: opt_prim::<Float64Type>(b, "reward", i)?,
        },
        meta,
        provenance: Provenance {
            kind,
            parent: opt_prim::<UInt64Type>(b, "provenance_parent", i)?,
            steps: start.zip(end),
            // The `origin` and `origin_id` columns name where a trajectory was first
            // written; an imported row is a new trajectory of the importing database.
            origin: None,
        },
        created_ms: opt_prim::<Int64Type>(b, "created_ms", i)?.unwrap_or(0),
        keys,
        step_keys,
    })
}

/// Rows per batch of the usage export.
const USAGE_BATCH_ROWS: usize = 65_536;

/// Writes `batches` (all of `schema`) to `path` through a temporary file renamed into place.
fn write_batches(
    path: &Path,
    schema: Arc<Schema>,
    mut next: impl FnMut() -> CliResult<Option<RecordBatch>>,
) -> CliResult {
    let tmp = path.with_extension("parquet.partial");
    let file = File::create(&tmp).map_err(|e| format!("cannot create {}: {e}", tmp.display()))?;
    let props = WriterProperties::builder()
        .set_compression(parquet::basic::Compression::SNAPPY)
        .build();
    let wfail = |e: parquet::errors::ParquetError| format!("cannot write {}: {e}", path.display());
    let mut w = ArrowWriter::try_new(file, schema, Some(props)).map_err(wfail)?;
    while let Some(b) = next()? {
        w.write(&b).map_err(wfail)?;
    }
    w.close().map_err(wfail)?;
    std::fs::rename(&tmp, path)
        .map_err(|e| format!("cannot rename {} to {}: {e}", tmp.display(), path.display()).into())
}

fn stage_name(s: trajdb::Stage) -> &'static str {
    match s {
        trajdb::Stage::Plan => "plan",
        trajdb::Stage::Reason => "reason",
        trajdb::Stage::Act => "act",
        trajdb::Stage::Other => "other",
    }
}

/// The schema of `retrievals.parquet`: one row per retrieval event.
fn retrieval_schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("origin", DataType::UInt64, false),
        Field::new("episode", DataType::UInt64, false),
        Field::new("trajectory_origin", DataType::UInt64, false),
        Field::new("trajectory", DataType::UInt64, false),
        Field::new("step", DataType::UInt32, true),
        Field::new("stage", DataType::Utf8, false),
        Field::new("db_episode", DataType::UInt64, false),
        Field::new("db_trajectory", DataType::UInt64, false),
    ]))
}

/// The schema of `episodes.parquet`: one row per episode.
fn episode_schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("origin", DataType::UInt64, false),
        Field::new("episode", DataType::UInt64, false),
        Field::new("outcome", DataType::Boolean, true),
        Field::new("created_ms", DataType::Int64, false),
        Field::new("db_episode", DataType::UInt64, false),
    ]))
}

/// Writes the usage log of `db` to `dir/retrievals.parquet` (one row per retrieval event:
/// the episode's origin and id there, the retrieved trajectory's origin and id there, step,
/// stage, and the episode's and trajectory's ids in this database) and `dir/episodes.parquet`
/// (one row per episode: origin, id there, outcome, `created_ms`, id in this database).
/// Returns (events, episodes) written.
pub fn export_usage(
    db: &Database,
    dir: &Path,
    progress: &super::progress::Progress,
) -> CliResult<(u64, u64)> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let episodes = db.episodes();
    let mut origins: std::collections::HashMap<u64, trajdb::Origin> =
        std::collections::HashMap::new();
    // Retrieval events, in episode order then log order.
    let mut cursor = (0usize, 0usize);
    let mut events = 0u64;
    let mut first = true;
    let schema = retrieval_schema();
    write_batches(&dir.join("retrievals.parquet"), schema.clone(), || {
        // An empty log still writes one (empty) batch, so the file has its schema.
        if cursor.0 >= episodes.len() && !first {
            return Ok(None);
        }
        first = false;
        let (mut ori, mut epi, mut tor, mut tra, mut db_e, mut db_t) = (
            UInt64Builder::new(),
            UInt64Builder::new(),
            UInt64Builder::new(),
            UInt64Builder::new(),
            UInt64Builder::new(),
            UInt64Builder::new(),
        );
        let mut step = UInt32Builder::new();
        let mut stage = StringBuilder::new();
        let mut rows = 0usize;
        while rows < USAGE_BATCH_ROWS && cursor.0 < episodes.len() {
            let ep = &episodes[cursor.0];
            let Some(e) = ep.events.get(cursor.1) else {
                cursor = (cursor.0 + 1, 0);
                progress.inc(1);
                continue;
            };
            cursor.1 += 1;
            let o = *origins.entry(e.id).or_insert_with(|| {
                db.trajectory_origin(e.id)
                    .unwrap_or(trajdb::Origin { db: 0, id: e.id })
            });
            ori.append_value(ep.origin.db);
            epi.append_value(ep.origin.id);
            tor.append_value(o.db);
            tra.append_value(o.id);
            step.append_option(e.step);
            stage.append_value(stage_name(e.stage));
            db_e.append_value(ep.id);
            db_t.append_value(e.id);
            rows += 1;
        }
        events += rows as u64;
        let cols: Vec<ArrayRef> = vec![
            Arc::new(ori.finish()),
            Arc::new(epi.finish()),
            Arc::new(tor.finish()),
            Arc::new(tra.finish()),
            Arc::new(step.finish()),
            Arc::new(stage.finish()),
            Arc::new(db_e.finish()),
            Arc::new(db_t.finish()),
        ];
        RecordBatch::try_new(schema.clone(), cols)
            .map(Some)
            .map_err(|e| format!("cannot build a Parquet batch: {e}").into())
    })?;
    let schema = episode_schema();
    let mut at = 0usize;
    let mut first = true;
    write_batches(&dir.join("episodes.parquet"), schema.clone(), || {
        if at >= episodes.len() && !first {
            return Ok(None);
        }
        first = false;
        let (mut ori, mut epi, mut db_e) = (
            UInt64Builder::new(),
            UInt64Builder::new(),
            UInt64Builder::new(),
        );
        let mut outcome = BooleanBuilder::new();
        let mut created = Int64Builder::new();
        for ep in episodes.iter().skip(at).take(USAGE_BATCH_ROWS) {
            ori.append_value(ep.origin.db);
            epi.append_value(ep.origin.id);
            outcome.append_option(ep.outcome);
            created.append_value(ep.created_ms);
            db_e.append_value(ep.id);
        }
        at += USAGE_BATCH_ROWS;
        let cols: Vec<ArrayRef> = vec![
            Arc::new(ori.finish()),
            Arc::new(epi.finish()),
            Arc::new(outcome.finish()),
            Arc::new(created.finish()),
            Arc::new(db_e.finish()),
        ];
        RecordBatch::try_new(schema.clone(), cols)
            .map(Some)
            .map_err(|e| format!("cannot build a Parquet batch: {e}").into())
    })?;
    Ok((events, episodes.len() as u64))
}
