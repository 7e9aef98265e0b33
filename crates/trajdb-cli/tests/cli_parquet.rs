//! Parquet export and import (cargo feature `parquet`; `cargo test --features parquet`):
//! the file read back with the `parquet` crate has the documented schema, a round trip
//! through Parquet is exact, and bad Parquet input is one clear error with nothing written.
//! Without the feature, a Parquet file and `--parquet` are refused clearly.
#![allow(clippy::unwrap_used, reason = "a test fails loudly on any error")]

mod cli_util;

#[cfg(not(feature = "parquet"))]
use cli_util::*;

#[cfg(feature = "parquet")]
mod with_feature {
    use std::fs::File;
    use std::sync::Arc;

    use arrow_array::cast::AsArray;
    use arrow_array::types::{Float32Type, UInt64Type};
    use arrow_array::{Int32Array, RecordBatch};
    use arrow_schema::{DataType, Field, Schema};
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use parquet::arrow::ArrowWriter;

    use super::cli_util::*;

    fn read(path: &std::path::Path) -> (Arc<Schema>, Vec<RecordBatch>, Option<String>) {
        let b = ParquetRecordBatchReaderBuilder::try_new(File::open(path).unwrap()).unwrap();
        let spaces = b
            .metadata()
            .file_metadata()
            .key_value_metadata()
            .and_then(|kv| kv.iter().find(|k| k.key == "trajdb_spaces").cloned())
            .and_then(|k| k.value);
        let schema = b.schema().clone();
        let batches = b.build().unwrap().map(Result::unwrap).collect();
        (schema, batches, spaces)
    }

    #[test]
    fn parquet_export_has_the_documented_schema_when_read_back_with_the_crate() {
        let db = seeded("pq-schema");
        let out = tmp("pq-schema.parquet");
        ok(&["export", s(&db), "--parquet", s(&out), "--with-utility"]);
        let (schema, batches, spaces) = read(&out);
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(
            names,
            [
                "id",
                "origin",
                "origin_id",
                "task",
                "env",
                "category",
                "goal",
                "plan",
                "steps",
                "final_observation",
                "success",
                "reward",
                "meta",
                "provenance_kind",
                "provenance_parent",
                "provenance_start",
                "provenance_end",
                "created_ms",
                "key_goal",
                "step_key_observation",
                "retrievals",
                "episodes",
                "labelled_retrievals",
                "success_retrievals",
                "q"
            ]
        );
        let ty = |n: &str| schema.field_with_name(n).unwrap().data_type().clone();
        assert_eq!(ty("id"), DataType::UInt64);
        assert_eq!(
            ty("key_goal"),
            DataType::FixedSizeList(Arc::new(Field::new("item", DataType::Float32, false)), 3)
        );
        match ty("steps") {
            DataType::List(f) => match f.data_type() {
                DataType::Struct(fs) => {
                    let n: Vec<&str> = fs.iter().map(|f| f.name().as_str()).collect();
                    assert_eq!(n, ["observation", "reasoning", "action", "reward"]);
                }
                other => panic!("steps item is {other}"),
            },
            other => panic!("steps is {other}"),
        }
        assert!(spaces.unwrap().starts_with("{\"trajdb_spaces\":["));
        let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
        assert_eq!(rows, 3);
        let b = &batches[0];
        let ids = b.column_by_name("id").unwrap().as_primitive::<UInt64Type>();
        assert_eq!(ids.values().to_vec(), vec![10, 11, 12]);
        let goals = b.column_by_name("goal").unwrap().as_string::<i32>();
        assert_eq!(goals.value(0), "make tea");
        let key = b.column_by_name("key_goal").unwrap().as_fixed_size_list();
        let v = key.value(0);
        assert_eq!(
            v.as_primitive::<Float32Type>().values().to_vec(),
            vec![1.0, 0.0, 0.5]
        );
        let steps = b.column_by_name("steps").unwrap().as_list::<i32>();
        assert_eq!(steps.value(0).len(), 2);
        let _ = std::fs::remove_file(&out);

        // Chat: one `messages` list of {role, content} per trajectory with steps.
        let chat = tmp("pq-chat.parquet");
        ok(&["export", s(&db), "--parquet", s(&chat), "--format", "chat"]);
        let (schema, batches, _) = read(&chat);
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(names, ["id", "messages"]);
        let m = batches[0]
            .column_by_name("messages")
            .unwrap()
            .as_list::<i32>();
        let first = m.value(0);
        let roles = first
            .as_struct()
            .column_by_name("role")
            .unwrap()
            .as_string::<i32>();
        assert_eq!(roles.value(0), "system");
        assert_eq!(roles.value(1), "user");
        assert_eq!(roles.value(2), "assistant");
        let _ = std::fs::remove_file(&chat);
        let _ = std::fs::remove_dir_all(&db);
    }

    #[test]
    fn parquet_round_trip_rebuilds_the_same_database() {
        let db = seeded("pq-rt");
        let out = tmp("pq-rt.parquet");
        ok(&["export", s(&db), "--parquet", s(&out)]);
        let db2 = tmp("pq-rt-copy");
        ok(&["import", s(&db2), s(&out)]);
        assert_eq!(export(&db2), export(&db));
        let _ = std::fs::remove_file(&out);
        let _ = std::fs::remove_dir_all(&db);
        let _ = std::fs::remove_dir_all(&db2);
    }

    #[test]
    fn bad_parquet_files_are_one_error_and_nothing_is_written() {
        let db = seeded("pq-bad");
        let before = export(&db);
        // Truncated: the magic, then garbage.
        let broken = tmp("pq-broken.parquet");
        std::fs::write(&broken, b"PAR1 not really parquet").unwrap();
        let r = trajdb(&["import", s(&db), s(&broken)], None);
        assert_refused(&r, &["cannot read it as Parquet", "nothing was imported"]);
        // A real Parquet file of another schema.
        let foreign = tmp("pq-foreign.parquet");
        let schema = Arc::new(Schema::new(vec![Field::new("a", DataType::Int32, false)]));
        let batch =
            RecordBatch::try_new(schema.clone(), vec![Arc::new(Int32Array::from(vec![1, 2]))])
                .unwrap();
        let mut w = ArrowWriter::try_new(File::create(&foreign).unwrap(), schema, None).unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
        let r = trajdb(&["import", s(&db), s(&foreign)], None);
        assert_refused(
            &r,
            &[
                "not a trajdb trajectory export: no column `goal` (it has: a)",
                "nothing was imported",
            ],
        );
        assert_eq!(export(&db), before, "nothing changed");
        // An unwritable destination.
        let r = trajdb(
            &["export", s(&db), "--parquet", "/nonexistent/dir/x.parquet"],
            None,
        );
        assert_refused(&r, &["cannot create /nonexistent/dir/x.parquet"]);
        let _ = std::fs::remove_file(&broken);
        let _ = std::fs::remove_file(&foreign);
        let _ = std::fs::remove_dir_all(&db);
    }

    /// `export --usage --parquet DIR`: one row per retrieval event and one per episode,
    /// named by origin, with the documented columns and types.
    #[test]
    fn usage_exports_one_row_per_retrieval_and_per_episode_by_origin() {
        use arrow_array::types::UInt32Type;
        use arrow_array::Array;
        use trajdb::{Database, Options, RetrievalEvent, Stage};
        let dir = seeded("pq-usage");
        let (origin, ep1) = {
            let db = Database::open(&dir, Options::default()).unwrap();
            let ev = |id, step, stage| RetrievalEvent { id, step, stage };
            let e1 = db.begin_episode().unwrap();
            db.log_retrievals(
                e1,
                &[ev(10, Some(1), Stage::Reason), ev(12, None, Stage::Plan)],
            )
            .unwrap();
            db.set_episode_outcome(e1, Some(true)).unwrap();
            let e2 = db.begin_episode().unwrap();
            db.log_retrievals(e2, &[ev(10, None, Stage::Act)]).unwrap();
            (db.origin().unwrap(), e1)
        };
        let out = tmp("pq-usage-out");
        ok(&["export", s(&dir), "--usage", "--parquet", s(&out)]);
        let (schema, batches, _) = read(&out.join("retrievals.parquet"));
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(
            names,
            [
                "origin",
                "episode",
                "trajectory_origin",
                "trajectory",
                "step",
                "stage",
                "db_episode",
                "db_trajectory"
            ]
        );
        assert_eq!(batches.len(), 1);
        let b = &batches[0];
        assert_eq!(b.num_rows(), 3);
        let u64s = |n: &str| -> Vec<u64> {
            b.column_by_name(n)
                .unwrap()
                .as_primitive::<UInt64Type>()
                .values()
                .to_vec()
        };
        assert_eq!(u64s("origin"), [origin; 3]);
        assert_eq!(u64s("episode"), [ep1, ep1, ep1 + 1]);
        assert_eq!(u64s("trajectory"), [10, 12, 10]);
        assert_eq!(u64s("trajectory_origin"), [origin; 3]);
        let stage = b.column_by_name("stage").unwrap().as_string::<i32>();
        let stages: Vec<&str> = (0..3).map(|i| stage.value(i)).collect();
        assert_eq!(stages, ["reason", "plan", "act"]);
        let step = b
            .column_by_name("step")
            .unwrap()
            .as_primitive::<UInt32Type>();
        let steps: Vec<Option<u32>> = (0..3)
            .map(|i| step.is_valid(i).then(|| step.value(i)))
            .collect();
        assert_eq!(steps, [Some(1), None, None]);
        let (schema, batches, _) = read(&out.join("episodes.parquet"));
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(
            names,
            ["origin", "episode", "outcome", "created_ms", "db_episode"]
        );
        let outcome = batches[0].column_by_name("outcome").unwrap().as_boolean();
        let outcomes: Vec<Option<bool>> = (0..2)
            .map(|i| outcome.is_valid(i).then(|| outcome.value(i)))
            .collect();
        assert_eq!(outcomes, [Some(true), None]);
    }
}

#[cfg(not(feature = "parquet"))]
#[test]
fn without_the_feature_parquet_is_refused_clearly() {
    let db = seeded("pq-off");
    let f = tmp("pq-off.parquet");
    std::fs::write(&f, b"PAR1....PAR1").unwrap();
    let r = trajdb(&["import", s(&db), s(&f)], None);
    assert_refused(
        &r,
        &[
            "is a Parquet file",
            "without Parquet support",
            "--features parquet",
        ],
    );
    let r = trajdb(&["export", s(&db), "--parquet", s(&f)], None);
    assert_refused(
        &r,
        &["--parquet: this trajdb was built without Parquet support"],
    );
    let _ = std::fs::remove_file(&f);
    let _ = std::fs::remove_dir_all(&db);
}
