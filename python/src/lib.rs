//! The `trajdb._native` extension: the trajdb engine in-process for Python.
//!
//! Everything here is translation: Python values in, engine calls (with the GIL released),
//! Python values out. A trajectory dict crosses as JSON text into the engine's own record
//! parser ([`trajdb::jsonl::parse_record`]); only its `keys` and `step_keys` are taken
//! aside first and copied from numpy buffers, so that vectors never become one Python
//! object per element. Engine errors become the exceptions of `trajdb._errors`.

use std::collections::HashMap;
use std::io::Write;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};

use numpy::{
    PyArray1, PyArrayDescrMethods, PyArrayDyn, PyArrayMethods, PyUntypedArray,
    PyUntypedArrayMethods,
};
use pyo3::prelude::*;
use pyo3::sync::GILOnceCell;
use pyo3::types::{PyDict, PyList, PyString, PyTuple, PyType};

use trajdb::embed::Embedder;
use trajdb::export::chat_example;
use trajdb::jsonl::{self, SpacesHeader};
use trajdb::{
    Database, Durability, EmbedderId, Filter, HashEmbedder, Level, Metric, Options, Outcome,
    ProvenanceKind, RetrievalEvent, RetrieveQuery, SearchMode, SpaceDef, Stage, Trajectory,
};

// ---------------------------------------------------------------------------------------
// Errors

/// The exception classes, looked up once from the pure-Python module `trajdb._errors`.
static ERRORS: GILOnceCell<Py<PyModule>> = GILOnceCell::new();

/// An exception of class `name` (from `trajdb._errors`) carrying `msg`.
fn exc(py: Python<'_>, name: &str, msg: String) -> PyErr {
    let module = ERRORS.get_or_try_init(py, || {
        PyModule::import(py, "trajdb._errors").map(Bound::unbind)
    });
    let class = module.and_then(|m| m.bind(py).getattr(name));
    match class.and_then(|c| c.downcast_into::<PyType>().map_err(PyErr::from)) {
        Ok(c) => PyErr::from_type(c, msg),
        Err(e) => e,
    }
}

/// `trajdb.InvalidInputError(msg)`.
fn invalid(py: Python<'_>, msg: impl Into<String>) -> PyErr {
    exc(py, "InvalidInputError", msg.into())
}

/// The exception a Python user catches for engine error `e`; the message is its one line.
fn to_py(py: Python<'_>, e: trajdb::Error) -> PyErr {
    use trajdb::Error as E;
    let class = match &e {
        E::Locked { .. } => "LockedError",
        E::Corrupt { .. } | E::ChecksumMismatch { .. } => "CorruptError",
        E::NotADatabase { .. } => "NotADatabaseError",
        E::IncompatibleVersion { .. } => "IncompatibleVersionError",
        E::ReadOnly => "ReadOnlyError",
        E::NotFound { .. } => "NotFoundError",
        E::InvalidInput { .. }
        | E::DimensionMismatch { .. }
        | E::UnknownSpace { .. }
        | E::SpaceConflict { .. }
        | E::DuplicateId { .. }
        | E::EmbedderMismatch { .. }
        | E::NothingToEmbed { .. }
        | E::TooLarge { .. }
        | E::MergeIncompatible { .. }
        | E::NoOrigin { .. } => "InvalidInputError",
        E::Io { .. } | E::PreviousIo | E::AfterCommit { .. } => "StorageError",
        _ => "Error",
    };
    exc(py, class, e.to_string())
}

/// Runs `f` without the GIL; an engine error becomes its exception and a panic (a bug)
/// becomes `trajdb.Error` instead of crossing into Python.
fn run<T: Send>(py: Python<'_>, f: impl FnOnce() -> trajdb::Result<T> + Send) -> PyResult<T> {
    match py.allow_threads(|| catch_unwind(AssertUnwindSafe(f))) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(to_py(py, e)),
        Err(p) => {
            let what = p
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            Err(exc(
                py,
                "Error",
                format!("internal error (a bug in trajdb): {what}"),
            ))
        }
    }
}

// ---------------------------------------------------------------------------------------
// Names (level, metric, stage, provenance, durability) through the engine's serde names

fn named<T: serde::de::DeserializeOwned>(
    py: Python<'_>,
    what: &str,
    value: &str,
    allowed: &str,
) -> PyResult<T> {
    serde_json::from_value(serde_json::Value::String(value.to_owned()))
        .map_err(|_| invalid(py, format!("{what} {value:?} is not one of {allowed}")))
}

fn durability(py: Python<'_>, s: &str) -> PyResult<Durability> {
    match s {
        "sync" => Ok(Durability::SyncEachCommit),
        "group" => Ok(Durability::GroupCommit),
        "buffered" => Ok(Durability::Buffered),
        _ => Err(invalid(
            py,
            format!("durability {s:?} is not one of \"sync\", \"group\", \"buffered\""),
        )),
    }
}

// ---------------------------------------------------------------------------------------
// Integers and strings

/// A non-negative integer argument (a Python int or anything with `__index__`, such as
/// numpy's integers). A negative or too-large one is InvalidInputError naming `what`; a
/// value that is no integer at all is TypeError.
fn uint(py: Python<'_>, obj: &Bound<'_, PyAny>, what: &str) -> PyResult<u64> {
    // bool is a subclass of int in Python, but True as an id or a count is a mistake.
    if obj.is_instance_of::<pyo3::types::PyBool>() {
        return Err(pyo3::exceptions::PyTypeError::new_err(format!(
            "{what} must be an int, got bool"
        )));
    }
    if let Ok(v) = obj.extract::<u64>() {
        return Ok(v);
    }
    let shown = obj
        .repr()
        .map(|r| r.to_string())
        .unwrap_or_else(|_| type_name(obj));
    if obj.hasattr("__index__").unwrap_or(false) {
        return Err(invalid(
            py,
            format!("{what} must be a non-negative integer (0..=2**64-1), got {shown}"),
        ));
    }
    Err(pyo3::exceptions::PyTypeError::new_err(format!(
        "{what} must be an int, got {}",
        type_name(obj)
    )))
}

/// A non-negative integer argument as given: its value, or (negative or too large) its repr,
/// refused by [`UInt::get`] as InvalidInputError naming the argument. Anything that is no
/// integer is TypeError at extraction.
struct UInt(Result<u64, String>);

impl<'py> FromPyObject<'py> for UInt {
    fn extract_bound(obj: &Bound<'py, PyAny>) -> PyResult<Self> {
        // bool is a subclass of int in Python, but `k=True` is a mistake, not a count.
        if obj.is_instance_of::<pyo3::types::PyBool>() {
            return Err(pyo3::exceptions::PyTypeError::new_err(
                "expected an int, got bool",
            ));
        }
        if let Ok(v) = obj.extract::<u64>() {
            return Ok(UInt(Ok(v)));
        }
        if obj.hasattr("__index__").unwrap_or(false) {
            let shown = obj
                .repr()
                .map(|r| r.to_string())
                .unwrap_or_else(|_| type_name(obj));
            return Ok(UInt(Err(shown)));
        }
        Err(pyo3::exceptions::PyTypeError::new_err(format!(
            "expected an int, got {}",
            type_name(obj)
        )))
    }
}

impl UInt {
    fn get(&self, py: Python<'_>, what: &str) -> PyResult<u64> {
        self.0.clone().map_err(|shown| {
            invalid(
                py,
                format!("{what} must be a non-negative integer (0..=2**64-1), got {shown}"),
            )
        })
    }

    fn get_usize(&self, py: Python<'_>, what: &str) -> PyResult<usize> {
        let v = self.get(py, what)?;
        usize::try_from(v).map_err(|_| invalid(py, format!("{what} {v} is too large")))
    }
}

/// `v` as a usize, or InvalidInputError saying the argument `what` must be an integer in
/// `range` (as text, e.g. `1..=2**64-1`; `role` says what it is) when it is negative or
/// past 64 bits (`UInt::get` would give the range 0..=2**64-1, which does not hold for
/// these). The caller checks the range's other bounds.
fn ranged(py: Python<'_>, v: &UInt, what: &str, range: &str, role: &str) -> PyResult<usize> {
    match &v.0 {
        Ok(_) => v.get_usize(py, what),
        Err(shown) => Err(invalid(
            py,
            format!("{what} must be an integer in {range} ({role}), got {shown}"),
        )),
    }
}

/// [`ranged`] for an argument of at least 1.
fn at_least_one(py: Python<'_>, v: &UInt, what: &str, role: &str) -> PyResult<usize> {
    ranged(py, v, what, "1..=2**64-1", role)
}

/// A graph beam width argument: at least 1 (InvalidInputError naming `ef` otherwise, as the
/// CLI refuses `--ef 0`).
fn beam(py: Python<'_>, ef: &UInt) -> PyResult<usize> {
    let v = at_least_one(py, ef, "ef", "the beam width of the graph walk")?;
    if v == 0 {
        return Err(invalid(
            py,
            "ef must be at least 1 (the beam width of the graph walk), got 0",
        ));
    }
    Ok(v)
}

/// `k` of an approximate search or retrieve: at least 1 (InvalidInputError naming `k`
/// otherwise, as the CLI refuses `-k 0`).
fn approx_k(py: Python<'_>, k: &UInt) -> PyResult<usize> {
    let v = at_least_one(py, k, "k", "the number of results")?;
    if v == 0 {
        return Err(invalid(
            py,
            "k must be at least 1 for an approximate search or retrieve, got 0",
        ));
    }
    Ok(v)
}

/// The `exact` argument of search and retrieve as the engine's mode: None the automatic
/// choice, True the exact scan, False the graph.
fn search_mode(exact: Option<bool>) -> SearchMode {
    match exact {
        None => SearchMode::Auto,
        Some(true) => SearchMode::Exact,
        Some(false) => SearchMode::Approx,
    }
}

/// `k` and `ef` of a search or retrieve in mode `exact`: `ef` is always checked; `k = 0`
/// is refused when the call is forced onto the graph (exact=False), and answers an empty
/// list otherwise, as the exact search does.
fn k_ef(py: Python<'_>, exact: Option<bool>, k: &UInt, ef: &UInt) -> PyResult<(usize, usize)> {
    let ef = beam(py, ef)?;
    let k = if exact == Some(false) {
        approx_k(py, k)?
    } else {
        k.get_usize(py, "k")?
    };
    Ok((k, ef))
}

/// An optional bool argument (an outcome): None, or a bool; anything else is TypeError
/// naming `what` (not pyo3's "cannot be converted to PyBool").
fn opt_bool(obj: Option<&Bound<'_, PyAny>>, what: &str) -> PyResult<Option<bool>> {
    let Some(obj) = obj.filter(|o| !o.is_none()) else {
        return Ok(None);
    };
    // A Python bool, or numpy's bool (pyo3 takes both; not an int or a str).
    if let Ok(b) = obj.extract::<bool>() {
        return Ok(Some(b));
    }
    Err(pyo3::exceptions::PyTypeError::new_err(format!(
        "{what} must be a bool (True or False) or None, got {}",
        type_name(obj)
    )))
}

/// The path dict of a retrieve: {"path", "decided_by", "spaces"}.
fn retrieve_path_dict<'py>(
    py: Python<'py>,
    p: &trajdb::RetrievePath,
) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("path", p.path.name())?;
    d.set_item("decided_by", p.decided_by.clone())?;
    let spaces = PyDict::new(py);
    for (name, path) in &p.spaces {
        spaces.set_item(name, path.name())?;
    }
    d.set_item("spaces", spaces)?;
    Ok(d)
}

/// A str argument as UTF-8; a lone surrogate (`"\ud800"`) is InvalidInputError naming `what`.
fn utf8(py: Python<'_>, s: &Bound<'_, PyString>, what: &str) -> PyResult<String> {
    s.extract::<String>().map_err(|_| {
        invalid(
            py,
            format!("{what}: the string is not valid Unicode text (it holds a lone surrogate such as \"\\ud800\")"),
        )
    })
}

/// Where in a JSON-shaped Python value the first thing JSON (UTF-8) cannot hold is: a
/// non-finite float, a str with a lone surrogate, or a non-str dict key; as
/// `(field path, why)`.
fn find_unencodable(obj: &Bound<'_, PyAny>, path: &str) -> Option<(String, String)> {
    let join = |k: &str| {
        if path.is_empty() {
            k.to_owned()
        } else {
            format!("{path}.{k}")
        }
    };
    if let Ok(s) = obj.downcast::<PyString>() {
        return s.extract::<String>().is_err().then(|| {
            (
                path.to_owned(),
                "the string is not valid Unicode text (it holds a lone surrogate such as \"\\ud800\")".to_owned(),
            )
        });
    }
    if obj.is_instance_of::<pyo3::types::PyFloat>() {
        let v: f64 = obj.extract().ok()?;
        return (!v.is_finite())
            .then(|| (path.to_owned(), format!("value {v} is not a finite number")));
    }
    if let Ok(d) = obj.downcast::<PyDict>() {
        for (k, v) in d.iter() {
            let Ok(ks) = k.downcast::<PyString>() else {
                continue;
            };
            let Ok(name) = ks.extract::<String>() else {
                return Some((
                    join("<key>"),
                    "a dict key is not valid Unicode text (it holds a lone surrogate)".to_owned(),
                ));
            };
            if let Some(found) = find_unencodable(&v, &join(&name)) {
                return Some(found);
            }
        }
        return None;
    }
    if obj.is_instance_of::<PyList>() || obj.is_instance_of::<PyTuple>() {
        for (i, v) in obj.try_iter().ok()?.enumerate() {
            if let Some(found) = find_unencodable(&v.ok()?, &format!("{path}[{i}]")) {
                return Some(found);
            }
        }
    }
    None
}

// ---------------------------------------------------------------------------------------
// Vectors

/// A numpy shape as Python prints it: `(2, 3)`, `(4,)`.
fn shape_str(s: &[usize]) -> String {
    match s {
        [one] => format!("({one},)"),
        _ => format!(
            "({})",
            s.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "?".into())
}

/// A numpy array of a numeric dtype other than float32, converted (copied) to float32.
fn as_f32_array<'py>(
    py: Python<'py>,
    a: &Bound<'py, PyUntypedArray>,
    at: &str,
) -> PyResult<Bound<'py, PyArrayDyn<f32>>> {
    let kind = a.dtype().kind();
    if !matches!(kind, b'f' | b'i' | b'u') {
        return Err(invalid(
            py,
            format!(
                "{at}: array dtype {} is not a number type; give float32",
                a.dtype()
            ),
        ));
    }
    // A float64 past float32's range becomes inf, which the engine then refuses by name;
    // numpy's own "overflow encountered in cast" warning would only precede that error.
    let quiet = PyDict::new(py);
    quiet.set_item("over", "ignore")?;
    let errstate = py
        .import("numpy")?
        .call_method("errstate", (), Some(&quiet))?;
    errstate.call_method0("__enter__")?;
    let c = a.call_method1("astype", ("float32",));
    errstate.call_method1("__exit__", (py.None(), py.None(), py.None()))?;
    c?.downcast_into::<PyArrayDyn<f32>>()
        .map_err(|_| invalid(py, format!("{at}: could not convert the array to float32")))
}

/// The elements of a float32 array in logical order, copied: a contiguous array in one
/// memcpy when in C order (`to_vec`, no borrow bookkeeping), any other through a read-only
/// borrowed view.
fn copy_out(a: &Bound<'_, PyArrayDyn<f32>>) -> Vec<f32> {
    // `to_vec` copies memory order, which is the logical order only for C order (a
    // Fortran-ordered 2-D array is contiguous too, but transposed in memory).
    if a.is_c_contiguous() {
        if let Ok(v) = a.to_vec() {
            return v;
        }
    }
    a.readonly().as_array().iter().copied().collect()
}

/// One vector: a 1-D numpy array (float32 is copied once; other numeric dtypes are converted)
/// or a sequence of numbers.
fn vec1(py: Python<'_>, obj: &Bound<'_, PyAny>, at: &str) -> PyResult<Vec<f32>> {
    if let Ok(a) = obj.downcast::<PyArrayDyn<f32>>() {
        if a.ndim() != 1 {
            return Err(invalid(
                py,
                format!(
                    "{at}: expected a 1-D array of shape (dims,), got shape {}",
                    shape_str(a.shape())
                ),
            ));
        }
        return Ok(copy_out(a));
    }
    if let Ok(a) = obj.downcast::<PyUntypedArray>() {
        return vec1(py, as_f32_array(py, a, at)?.as_any(), at);
    }
    if obj.is_instance_of::<PyString>() {
        return Err(invalid(
            py,
            format!("{at}: expected a vector (numpy float32 array or list of numbers), got a str"),
        ));
    }
    let v: Vec<f64> = obj.extract().map_err(|_| {
        invalid(
            py,
            format!(
                "{at}: expected a 1-D vector (numpy float32 array or list of numbers), got {}",
                type_name(obj)
            ),
        )
    })?;
    Ok(v.into_iter().map(|x| x as f32).collect())
}

/// Several vectors: a 2-D numpy array `(rows, dims)` or a sequence of 1-D vectors. `rows`
/// names the first axis in errors (`n_steps` for step keys, `m` for queries).
fn vec2(py: Python<'_>, obj: &Bound<'_, PyAny>, at: &str, rows: &str) -> PyResult<Vec<Vec<f32>>> {
    if let Ok(a) = obj.downcast::<PyArrayDyn<f32>>() {
        let shape = a.shape().to_vec();
        if shape.len() != 2 {
            return Err(invalid(
                py,
                format!(
                    "{at}: expected a 2-D array of shape ({rows}, dims), got shape {}",
                    shape_str(&shape)
                ),
            ));
        }
        let flat = copy_out(a);
        if shape[1] == 0 {
            return Ok(vec![Vec::new(); shape[0]]);
        }
        return Ok(flat.chunks(shape[1]).map(<[f32]>::to_vec).collect());
    }
    if let Ok(a) = obj.downcast::<PyUntypedArray>() {
        return vec2(py, as_f32_array(py, a, at)?.as_any(), at, rows);
    }
    if obj.is_instance_of::<PyString>() || obj.is_instance_of::<PyDict>() {
        return Err(invalid(
            py,
            format!(
                "{at}: expected a 2-D array of shape ({rows}, dims) or a list of vectors, got {}",
                type_name(obj)
            ),
        ));
    }
    let items = obj.try_iter().map_err(|_| {
        invalid(
            py,
            format!(
                "{at}: expected a 2-D array of shape ({rows}, dims) or a list of vectors, got {}",
                type_name(obj)
            ),
        )
    })?;
    let mut out = Vec::new();
    for (i, item) in items.enumerate() {
        out.push(vec1(py, &item?, &format!("{at}[{i}]"))?);
    }
    Ok(out)
}

fn array1<'py>(py: Python<'py>, v: &[f32]) -> Bound<'py, PyArray1<f32>> {
    PyArray1::from_slice(py, v)
}

fn array2<'py>(py: Python<'py>, vs: &[Vec<f32>], dims: usize) -> PyResult<Bound<'py, PyAny>> {
    let flat: Vec<f32> = vs.iter().flatten().copied().collect();
    let a = PyArray1::from_vec(py, flat);
    Ok(a.reshape([vs.len(), dims])?.into_any())
}

// ---------------------------------------------------------------------------------------
// JSON crossing

/// The `default` hook for `json.dumps` of a record dict: numpy integer scalars (anything
/// with `__index__`, bool excepted) become int and numpy floating scalars float, as the
/// same values written as Python numbers would; anything else is refused as json does.
fn json_default(py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
    static DEFAULT: GILOnceCell<Py<PyAny>> = GILOnceCell::new();
    Ok(DEFAULT
        .get_or_try_init(py, || {
            let m = PyModule::from_code(
                py,
                c"import numbers, operator\ndef default(o):\n    if isinstance(o, bool):\n        return o\n    if hasattr(type(o), '__index__'):\n        return operator.index(o)\n    if isinstance(o, numbers.Real):\n        return float(o)\n    raise TypeError(f'Object of type {type(o).__name__} is not JSON serializable')\n",
                c"trajdb_json_default.py",
                c"trajdb_json_default",
            )?;
            m.getattr("default").map(Bound::unbind)
        })?
        .bind(py)
        .clone())
}

fn json_module(py: Python<'_>) -> PyResult<Bound<'_, PyModule>> {
    static JSON: GILOnceCell<Py<PyModule>> = GILOnceCell::new();
    Ok(JSON
        .get_or_try_init(py, || PyModule::import(py, "json").map(Bound::unbind))?
        .bind(py)
        .clone())
}

/// A serde value as the Python object `json.loads` makes of it.
fn to_object<'py>(py: Python<'py>, v: &impl serde::Serialize) -> PyResult<Bound<'py, PyAny>> {
    let s = serde_json::to_string(v)
        .map_err(|e| exc(py, "Error", format!("cannot encode a result as JSON: {e}")))?;
    json_module(py)?.call_method1("loads", (s,))
}

/// A trajectory dict in the JSONL record shape, parsed by the engine's record parser. `at`
/// names it in errors. Keys are taken from numpy arrays or lists.
fn trajectory(py: Python<'_>, obj: &Bound<'_, PyAny>, at: &str) -> PyResult<Trajectory> {
    let d = obj.downcast::<PyDict>().map_err(|_| {
        invalid(
            py,
            format!(
                "{at}: a trajectory is a dict in the JSONL record shape, got {}",
                type_name(obj)
            ),
        )
    })?;
    let rest = d.copy()?;
    let keys = rest.get_item("keys")?;
    let step_keys = rest.get_item("step_keys")?;
    for k in ["keys", "step_keys"] {
        if rest.contains(k)? {
            rest.del_item(k)?;
        }
    }
    let kwargs = PyDict::new(py);
    kwargs.set_item("allow_nan", false)?;
    kwargs.set_item("ensure_ascii", false)?;
    kwargs.set_item("default", json_default(py)?)?;
    let bad = |fallback: String| match find_unencodable(rest.as_any(), "") {
        Some((field, why)) => invalid(py, format!("{at}: {field}: {why}")),
        None => invalid(py, format!("{at}: not a JSON-shaped record: {fallback}")),
    };
    let text: String = json_module(py)?
        .call_method("dumps", (&rest,), Some(&kwargs))
        .map_err(|e| bad(e.value(py).to_string()))?
        .extract()
        .map_err(|e: PyErr| bad(e.value(py).to_string()))?;
    let mut t = jsonl::parse_record(text.as_bytes(), at).map_err(|e| to_py(py, e))?;
    if let Some(keys) = keys.filter(|k| !k.is_none()) {
        let keys = keys.downcast::<PyDict>().map_err(|_| {
            invalid(
                py,
                format!("{at}: keys must be a dict of key-space name to vector"),
            )
        })?;
        for (name, v) in keys.iter() {
            let name: String = name
                .extract()
                .map_err(|_| invalid(py, format!("{at}: keys names must be str")))?;
            let v = vec1(py, &v, &format!("{at}: keys.{name}"))?;
            t.keys.insert(name, v);
        }
    }
    if let Some(step_keys) = step_keys.filter(|k| !k.is_none()) {
        let step_keys = step_keys.downcast::<PyDict>().map_err(|_| {
            invalid(
                py,
                format!(
                    "{at}: step_keys must be a dict of key-space name to (n_steps, dims) array"
                ),
            )
        })?;
        for (name, v) in step_keys.iter() {
            let name: String = name
                .extract()
                .map_err(|_| invalid(py, format!("{at}: step_keys names must be str")))?;
            let vs = vec2(py, &v, &format!("{at}: step_keys.{name}"), "n_steps")?;
            t.step_keys.insert(name, vs);
        }
    }
    Ok(t)
}

/// What the engine checks at commit, checked before anything is written, so that a batch
/// is refused whole: finite values, one step key per step, and the key spaces' names,
/// levels and dimensions.
fn check_trajectory(py: Python<'_>, t: &Trajectory, spaces: &[SpaceDef], at: &str) -> PyResult<()> {
    let finite = |field: String, v: &[f32]| -> PyResult<()> {
        match v.iter().position(|x| !x.is_finite()) {
            Some(i) => Err(invalid(
                py,
                format!(
                    "{at}: {field}[{i}]: value {} is not a finite 32-bit float{}",
                    v[i],
                    if v[i].is_infinite() {
                        " (infinite, or a finite number past float32's range of about 3.4e38, which float32 turns into infinity)"
                    } else {
                        ""
                    }
                ),
            )),
            None => Ok(()),
        }
    };
    for (name, v) in &t.keys {
        finite(format!("keys.{name}"), v)?;
    }
    for (name, vs) in &t.step_keys {
        if vs.len() != t.steps.len() {
            return Err(invalid(
                py,
                format!(
                    "{at}: step_keys.{name}: has {} vectors for {} steps; give one vector per step",
                    vs.len(),
                    t.steps.len()
                ),
            ));
        }
        for (i, v) in vs.iter().enumerate() {
            finite(format!("step_keys.{name}[{i}]"), v)?;
        }
    }
    jsonl::check_keys(t, spaces).map_err(|e| to_py(py, jsonl::locate(e, at)))
}

/// A trajectory as a dict in the JSONL record shape; keys as float32 arrays (1-D per
/// trajectory key, 2-D `(n_steps, dims)` per step key).
/// Python `Example`s of the engine's examples (the trajectory as a dict).
fn examples_py(py: Python<'_>, examples: Vec<trajdb::Example>) -> PyResult<Vec<PyExample>> {
    examples
        .into_iter()
        .map(|e| {
            Ok(PyExample {
                id: e.id,
                score: e.score,
                traj_score: e.traj_score,
                step_score: e.step_score,
                matched_step: e.matched_step,
                window: e.window,
                trajectory: trajectory_dict(py, e.trajectory)?.unbind(),
            })
        })
        .collect()
}

fn trajectory_dict<'py>(py: Python<'py>, mut t: Trajectory) -> PyResult<Bound<'py, PyAny>> {
    let keys = std::mem::take(&mut t.keys);
    let step_keys = std::mem::take(&mut t.step_keys);
    let d = to_object(py, &t)?;
    let kd = PyDict::new(py);
    for (name, v) in &keys {
        kd.set_item(name, array1(py, v))?;
    }
    let sd = PyDict::new(py);
    for (name, vs) in &step_keys {
        let dims = vs.first().map_or(0, Vec::len);
        sd.set_item(name, array2(py, vs, dims)?)?;
    }
    d.set_item("keys", kd)?;
    d.set_item("step_keys", sd)?;
    Ok(d)
}

// ---------------------------------------------------------------------------------------
// Embedders

/// A key space's text embedder: the built-in hash embedder or a Python callable
/// `list[str] -> ndarray (n, dims) float32`.
enum Emb {
    Hash(HashEmbedder),
    Py { f: Py<PyAny>, id: EmbedderId },
}

impl Emb {
    fn id(&self) -> EmbedderId {
        match self {
            Emb::Hash(h) => h.id(),
            Emb::Py { id, .. } => id.clone(),
        }
    }

    /// One vector per text, each `dims` long.
    fn embed(&self, py: Python<'_>, texts: Vec<String>, space: &str) -> PyResult<Vec<Vec<f32>>> {
        let at = format!("embedder of key space `{space}`");
        match self {
            Emb::Hash(h) => run(py, || texts.iter().map(|s| h.embed(s)).collect()),
            Emb::Py { f, id } => {
                let n = texts.len();
                let out = f.bind(py).call1((PyList::new(py, texts)?,))?;
                let vs = vec2(py, &out, &at, "n_texts")?;
                let dims = usize::try_from(id.dims).unwrap_or(usize::MAX);
                if vs.len() != n || vs.iter().any(|v| v.len() != dims) {
                    return Err(invalid(
                        py,
                        format!(
                            "{at}: returned {} vectors of {} dims for {n} texts; expected an array of shape ({n}, {dims})",
                            vs.len(),
                            vs.first().map_or(0, Vec::len)
                        ),
                    ));
                }
                Ok(vs)
            }
        }
    }
}

/// The text of `space`'s field in `t`: one text for a trajectory-level field, one per step
/// for a step-level one (the fields of `trajdb::jsonl::TRAJECTORY_FIELDS` / `STEP_FIELDS`).
fn field_texts(t: &Trajectory, name: &str) -> Option<Vec<String>> {
    let one = |s: &str| Some(vec![s.to_owned()]);
    let each =
        |f: fn(&trajdb::Step) -> &str| Some(t.steps.iter().map(|s| f(s).to_owned()).collect());
    match name {
        "goal" => one(&t.goal),
        "plan" => one(&t.plan),
        "task" => one(&t.task),
        "category" => t.category.as_deref().and_then(one),
        "observation" => each(|s| &s.observation),
        "reasoning" => each(|s| &s.reasoning),
        "action" => each(|s| &s.action),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------
// Result types

/// One search result: trajectory `id`, matched `step` (step-level spaces; else None) and
/// `score`, a similarity (higher is better: cosine in [-1, 1], dot product, or negative
/// Euclidean distance).
#[pyclass(module = "trajdb", name = "Hit", frozen, eq)]
#[derive(PartialEq)]
struct PyHit {
    #[pyo3(get)]
    id: u64,
    #[pyo3(get)]
    step: Option<u32>,
    #[pyo3(get)]
    score: f32,
}

impl From<trajdb::Hit> for PyHit {
    fn from(h: trajdb::Hit) -> Self {
        PyHit {
            id: h.id,
            step: h.step,
            score: h.score,
        }
    }
}

#[pymethods]
impl PyHit {
    fn __repr__(&self) -> String {
        match self.step {
            Some(s) => format!("Hit(id={}, step={s}, score={})", self.id, self.score),
            None => format!("Hit(id={}, step=None, score={})", self.id, self.score),
        }
    }
}

/// One retrieved in-context example (see `Database.retrieve`).
#[pyclass(module = "trajdb", name = "Example", frozen)]
struct PyExample {
    /// Trajectory id.
    #[pyo3(get)]
    id: u64,
    /// Ranking score: trajectory score (+ step score when a step key was given).
    #[pyo3(get)]
    score: f32,
    /// Mean trajectory-level similarity.
    #[pyo3(get)]
    traj_score: f32,
    /// Best step similarity, when a step key was given.
    #[pyo3(get)]
    step_score: Option<f32>,
    /// The best-matching step, when a step key was given.
    #[pyo3(get)]
    matched_step: Option<u32>,
    /// Steps `[start, end)` of the trajectory kept in `trajectory["steps"]`.
    #[pyo3(get)]
    window: (u32, u32),
    /// The trajectory as a dict (no keys), its steps cut to `window`.
    #[pyo3(get)]
    trajectory: Py<PyAny>,
}

#[pymethods]
impl PyExample {
    fn __repr__(&self) -> String {
        format!(
            "Example(id={}, score={}, matched_step={}, window={:?})",
            self.id,
            self.score,
            opt(self.matched_step),
            self.window
        )
    }
}

/// Usage counters of one trajectory and its exemplar utility `q`.
#[pyclass(module = "trajdb", name = "Utility", frozen, eq)]
#[derive(PartialEq)]
struct PyUtility {
    /// Times retrieved over all episodes: sum of f_i(t).
    #[pyo3(get)]
    retrievals: u64,
    /// Episodes that retrieved it at least once.
    #[pyo3(get)]
    episodes: u64,
    /// Retrievals in episodes whose outcome is known.
    #[pyo3(get)]
    labelled_retrievals: u64,
    /// Retrievals in successful episodes.
    #[pyo3(get)]
    success_retrievals: u64,
    /// Q = success_retrievals / labelled_retrievals, None while no retrieving episode has an
    /// outcome.
    #[pyo3(get)]
    q: Option<f64>,
}

impl From<trajdb::Utility> for PyUtility {
    fn from(u: trajdb::Utility) -> Self {
        PyUtility {
            retrievals: u.retrievals,
            episodes: u.episodes,
            labelled_retrievals: u.labelled_retrievals,
            success_retrievals: u.success_retrievals,
            q: u.q(),
        }
    }
}

#[pymethods]
impl PyUtility {
    fn __repr__(&self) -> String {
        format!(
            "Utility(retrievals={}, episodes={}, labelled_retrievals={}, success_retrievals={}, q={})",
            self.retrievals, self.episodes, self.labelled_retrievals, self.success_retrievals, opt(self.q)
        )
    }
}

// ---------------------------------------------------------------------------------------
// Database

/// An open trajdb database. Made by `trajdb.open`; see the stub `trajdb/__init__.pyi` for the
/// documented signatures.
#[pyclass(module = "trajdb", name = "Database", frozen)]
struct PyDatabase {
    db: RwLock<Option<Arc<Database>>>,
    path: PathBuf,
    read_only: bool,
    embedders: Mutex<HashMap<String, Arc<Emb>>>,
    /// Key spaces whose discarded graph this handle has warned about (once each).
    graph_warned: Mutex<std::collections::HashSet<String>>,
}

/// The key spaces a retrieve query names: its trajectory keys, then its step key.
fn query_spaces(q: &trajdb::RetrieveQuery) -> impl Iterator<Item = &str> {
    q.keys
        .iter()
        .chain(&q.step_key)
        .map(|(name, _)| name.as_str())
}

/// Issues `msg` as a RuntimeWarning from the caller's line.
fn runtime_warning(py: Python<'_>, msg: String) -> PyResult<()> {
    let category = py.get_type::<pyo3::exceptions::PyRuntimeWarning>();
    PyErr::warn(
        py,
        &category,
        &std::ffi::CString::new(msg).unwrap_or_default(),
        1,
    )
}

/// `None` or the value, as Python prints it.
fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(|| "None".into(), |x| x.to_string())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[allow(clippy::too_many_arguments)]
fn filter(
    py: Python<'_>,
    success_only: bool,
    env: Option<String>,
    task: Option<String>,
    exclude: Option<&Bound<'_, PyAny>>,
    provenance: Option<&str>,
    as_of: Option<UInt>,
) -> PyResult<Filter> {
    let mut ids = Vec::new();
    if let Some(ex) = exclude.filter(|e| !e.is_none()) {
        let items = ex.try_iter().map_err(|_| {
            invalid(
                py,
                format!(
                    "exclude must be a list of trajectory ids, got {}",
                    type_name(ex)
                ),
            )
        })?;
        for (i, item) in items.enumerate() {
            ids.push(uint(py, &item?, &format!("exclude[{i}]"))?);
        }
    }
    let as_of = as_of.map(|a| a.get(py, "as_of")).transpose()?;
    Ok(Filter {
        success_only,
        env,
        task,
        exclude: ids,
        provenance: provenance
            .map(|p| {
                named::<ProvenanceKind>(
                    py,
                    "provenance",
                    p,
                    "\"self_generated\", \"imported\", \"relabelled\"",
                )
            })
            .transpose()?,
        as_of,
    })
}

impl PyDatabase {
    /// Warns (RuntimeWarning, once per space and handle, as the CLI's search does) for each
    /// of `spaces` whose graph file could not be used: its searches scan exactly until
    /// build_graph rebuilds it, so a caller who expected the graph's speed learns why.
    fn warn_discarded_graphs<'a>(
        &self,
        py: Python<'_>,
        db: &Database,
        spaces: impl IntoIterator<Item = &'a str>,
    ) -> PyResult<()> {
        for space in spaces {
            let Ok(Some(why)) = db.graph_discarded(space) else {
                continue;
            };
            if !lock(&self.graph_warned).insert(space.to_owned()) {
                continue;
            }
            let msg = format!(
                "{}: the graph index of `{space}` was not used: {why}; searches scan its rows exactly (right answers, without the graph's speed) until build_graph(\"{space}\") rebuilds it",
                self.path.display()
            );
            runtime_warning(py, msg)?;
        }
        Ok(())
    }

    fn handle(&self, py: Python<'_>) -> PyResult<Arc<Database>> {
        self.db
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
            .ok_or_else(|| exc(py, "Error", "the database is closed".into()))
    }

    fn embedder(&self, py: Python<'_>, space: &str) -> PyResult<Arc<Emb>> {
        lock(&self.embedders).get(space).cloned().ok_or_else(|| {
            invalid(
                py,
                format!(
                    "key space `{space}` has no embedder in this handle; give one to create_space (again, after reopening, for a Python callable)"
                ),
            )
        })
    }

    /// Registers the built-in hash embedder for every space that records it.
    fn register_hash_spaces(&self, db: &Database) {
        let mut m = lock(&self.embedders);
        for (def, e) in jsonl::hash_spaces(&db.spaces()) {
            m.entry(def.name).or_insert_with(|| Arc::new(Emb::Hash(e)));
        }
    }

    /// The engine query of retrieve() and retrieve_with_work(), checked and converted.
    #[allow(clippy::too_many_arguments)]
    fn retrieve_query(
        &self,
        py: Python<'_>,
        keys: &Bound<'_, PyAny>,
        step_key: Option<&Bound<'_, PyAny>>,
        k: UInt,
        window: UInt,
        success_only: bool,
        env: Option<String>,
        task: Option<String>,
        exclude: Option<&Bound<'_, PyAny>>,
        provenance: Option<&str>,
        as_of: Option<UInt>,
    ) -> PyResult<RetrieveQuery> {
        // A closed handle is refused before the arguments are looked at.
        self.handle(py)?;
        let f = filter(py, success_only, env, task, exclude, provenance, as_of)?;
        let k = k.get_usize(py, "k")?;
        let window = window.get_usize(py, "window")?;
        let kd = keys.downcast::<PyDict>().map_err(|_| {
            invalid(
                py,
                format!(
                    "retrieve keys must be a dict of key-space name to vector or text, got {}",
                    type_name(keys)
                ),
            )
        })?;
        let mut q = RetrieveQuery {
            k,
            window,
            filter: f,
            ..Default::default()
        };
        for (name, v) in kd.iter() {
            let name: String = name
                .extract()
                .map_err(|_| invalid(py, "retrieve keys names must be str"))?;
            let (v, _) = self.query(py, &name, &v, &format!("keys[{name:?}]"))?;
            q.keys.push((name, v));
        }
        if let Some(sk) = step_key.filter(|s| !s.is_none()) {
            let (name, v): (String, Bound<'_, PyAny>) = sk.extract().map_err(|_| {
                invalid(py, "step_key must be a tuple (space name, vector or text)")
            })?;
            let (v, _) = self.query(py, &name, &v, &format!("step_key[{name:?}]"))?;
            q.step_key = Some((name, v));
        }
        Ok(q)
    }

    /// search(), search_text() and search_with_path(): the query a vector (`vector`) or a
    /// text (`text`, embedded by the space's embedder), by the mode `exact` says; the hits
    /// and the name of the path that answered.
    /// retrieve() and retrieve_with_path(): the query from the arguments, answered by the
    /// mode `exact` says; the examples and the path that answered.
    #[allow(clippy::too_many_arguments)]
    fn retrieve_in(
        &self,
        py: Python<'_>,
        keys: &Bound<'_, PyAny>,
        step_key: Option<&Bound<'_, PyAny>>,
        k: UInt,
        window: UInt,
        success_only: bool,
        env: Option<String>,
        task: Option<String>,
        exclude: Option<&Bound<'_, PyAny>>,
        provenance: Option<&str>,
        as_of: Option<UInt>,
        exact: Option<bool>,
        ef: UInt,
    ) -> PyResult<(Vec<trajdb::Example>, trajdb::RetrievePath)> {
        // A closed handle is refused before the arguments are looked at.
        self.handle(py)?;
        let (_, ef) = k_ef(py, exact, &k, &ef)?;
        let q = self.retrieve_query(
            py,
            keys,
            step_key,
            k,
            window,
            success_only,
            env,
            task,
            exclude,
            provenance,
            as_of,
        )?;
        let db = self.handle(py)?;
        let out = run(py, || db.retrieve_mode(&q, search_mode(exact), ef))?;
        if exact != Some(true) {
            self.warn_discarded_graphs(py, &db, query_spaces(&q))?;
        }
        Ok(out)
    }

    #[allow(clippy::too_many_arguments)]
    fn search_in(
        &self,
        py: Python<'_>,
        space: &str,
        query: Result<&Bound<'_, PyAny>, &Bound<'_, PyString>>,
        k: &UInt,
        f: Filter,
        exact: Option<bool>,
        ef: &UInt,
    ) -> PyResult<(Vec<PyHit>, &'static str)> {
        let db = self.handle(py)?;
        let (k, ef) = k_ef(py, exact, k, ef)?;
        let (q, embedder) = match query {
            Ok(v) => (vec1(py, v, "vector")?, None),
            Err(text) => {
                let text = utf8(py, text, "text")?;
                let e = self.embedder(py, space)?;
                let q = e.embed(py, vec![text], space)?.pop().unwrap_or_default();
                (q, Some(e.id()))
            }
        };
        let (hits, path) = run(py, || {
            if let Some(e) = &embedder {
                db.check_embedder(space, e)?;
            }
            db.search_mode(space, &q, k, &f, search_mode(exact), ef)
        })?;
        if exact != Some(true) {
            self.warn_discarded_graphs(py, &db, [space])?;
        }
        Ok((hits.into_iter().map(PyHit::from).collect(), path.name()))
    }

    /// A query vector given as a vector or, for a space with an embedder, as text.
    fn query(
        &self,
        py: Python<'_>,
        space: &str,
        q: &Bound<'_, PyAny>,
        at: &str,
    ) -> PyResult<(Vec<f32>, Option<EmbedderId>)> {
        if let Ok(text) = q.downcast::<PyString>() {
            let e = self.embedder(py, space)?;
            let mut vs = e.embed(py, vec![utf8(py, text, at)?], space)?;
            return Ok((vs.pop().unwrap_or_default(), Some(e.id())));
        }
        Ok((vec1(py, q, at)?, None))
    }

    /// log_retrievals for an episode id already checked.
    fn log_to(
        &self,
        py: Python<'_>,
        episode: u64,
        items: &Bound<'_, PyAny>,
        stage: &str,
    ) -> PyResult<()> {
        let db = self.handle(py)?;
        let stage: Stage = named(
            py,
            "stage",
            stage,
            "\"plan\", \"reason\", \"act\", \"other\"",
        )?;
        let mut events = Vec::new();
        let iter = items
            .try_iter()
            .map_err(|_| invalid(py, "log takes a list of Example, Hit or trajectory ids"))?;
        for item in iter {
            let item = item?;
            let (id, step) = if let Ok(e) = item.downcast::<PyExample>() {
                let e = e.get();
                (e.id, e.matched_step)
            } else if let Ok(h) = item.downcast::<PyHit>() {
                let h = h.get();
                (h.id, h.step)
            } else if item.hasattr("__index__").unwrap_or(false) {
                (uint(py, &item, "log item")?, None)
            } else {
                return Err(invalid(
                    py,
                    format!(
                        "log takes Example, Hit or int trajectory ids, got {}",
                        type_name(&item)
                    ),
                ));
            };
            events.push(RetrievalEvent { id, step, stage });
        }
        run(py, || db.log_retrievals(episode, &events))
    }

    /// set_episode_outcome for an episode id already checked.
    fn outcome_to(&self, py: Python<'_>, episode: u64, success: Option<bool>) -> PyResult<()> {
        let db = self.handle(py)?;
        run(py, || db.set_episode_outcome(episode, success))
    }

    /// Parses a trajectory dict and fills, from its text, the keys of every space with an
    /// embedder that the record does not carry.
    fn prepare(
        &self,
        py: Python<'_>,
        obj: &Bound<'_, PyAny>,
        spaces: &[SpaceDef],
        at: &str,
    ) -> PyResult<Trajectory> {
        let mut t = trajectory(py, obj, at)?;
        let embs: Vec<(String, Arc<Emb>)> = lock(&self.embedders)
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (name, e) in embs {
            let Some(def) = spaces.iter().find(|s| s.name == name) else {
                continue;
            };
            let present = match def.level {
                Level::Trajectory => t.keys.contains_key(&name),
                Level::Step => t.step_keys.contains_key(&name),
            };
            if present {
                continue;
            }
            if let Emb::Hash(h) = &*e {
                // The engine's own rule, as `trajdb import` and the CLI apply it: a text
                // without features (empty, only punctuation or emoji) gets no key
                // (`Filled::NoFeatures`), and the record is stored without it.
                jsonl::embed_missing(&mut t, def, h)
                    .map_err(|err| to_py(py, jsonl::locate(err, at)))?;
                continue;
            }
            // A callable is never asked to embed a missing or empty text, nor a record
            // without steps: the record gets no key in that space (as the engine does for a
            // text without features), rather than one made up from "".
            let Some(texts) = field_texts(&t, &name) else {
                continue;
            };
            if texts.is_empty() || texts.iter().any(|s| s.trim().is_empty()) {
                continue;
            }
            let mut vs = e.embed(py, texts, &name)?;
            match def.level {
                Level::Trajectory => {
                    t.keys.insert(name, vs.pop().unwrap_or_default());
                }
                Level::Step => {
                    t.step_keys.insert(name, vs);
                }
            }
        }
        check_trajectory(py, &t, spaces, at)?;
        Ok(t)
    }
}

#[pymethods]
impl PyDatabase {
    fn __repr__(&self) -> String {
        let state = if self.db.read().map(|d| d.is_some()).unwrap_or(false) {
            if self.read_only {
                "read-only"
            } else {
                "open"
            }
        } else {
            "closed"
        };
        format!("Database({:?}, {state})", self.path.display().to_string())
    }

    /// The database directory.
    #[getter]
    fn path(&self) -> String {
        self.path.display().to_string()
    }

    /// Whether the handle was opened read-only.
    #[getter]
    fn read_only(&self) -> bool {
        self.read_only
    }

    /// Whether `close()` has been called.
    #[getter]
    fn closed(&self) -> bool {
        self.db.read().map(|d| d.is_none()).unwrap_or(true)
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&self, py: Python<'_>, _args: &Bound<'_, PyTuple>) -> PyResult<bool> {
        self.close(py)?;
        Ok(false)
    }

    /// Syncs and closes the handle (releasing the writer lock). Idempotent.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let db = self
            .db
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(db) = db {
            lock(&self.embedders).clear();
            run(py, move || {
                db.sync()?;
                drop(db);
                Ok(())
            })?;
        }
        Ok(())
    }

    /// Creates a key space, or checks an existing one has this definition. dims 1..=65536;
    /// level "trajectory"|"step"; metric "cosine"|"dot"|"l2"; embedder None, "hash" or a
    /// callable list[str] -> ndarray (n, dims) float32. Raises InvalidInputError.
    #[pyo3(signature = (name, *, dims, level="trajectory", metric="cosine", embedder=None))]
    fn create_space(
        &self,
        py: Python<'_>,
        name: &str,
        dims: &Bound<'_, PyAny>,
        level: &str,
        metric: &str,
        embedder: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let db = self.handle(py)?;
        if dims.is_instance_of::<pyo3::types::PyBool>() {
            return Err(pyo3::exceptions::PyTypeError::new_err(format!(
                "space `{name}`: dims must be an int, got bool"
            )));
        }
        let dims: i64 = dims.extract().map_err(|_| {
            pyo3::exceptions::PyTypeError::new_err(format!(
                "space `{name}`: dims must be an int, got {}",
                type_name(dims)
            ))
        })?;
        let dims = u32::try_from(dims)
            .ok()
            .filter(|d| (1..=65_536).contains(d))
            .ok_or_else(|| {
                invalid(
                    py,
                    format!("space `{name}`: dims must be 1..=65536, got {dims}"),
                )
            })?;
        let level: Level = named(py, "level", level, "\"trajectory\", \"step\"")?;
        let metric: Metric = named(py, "metric", metric, "\"cosine\", \"dot\", \"l2\"")?;
        let mut def = SpaceDef::new(name, level, dims, metric);
        let emb = match embedder {
            None => None,
            Some(e) if e.is_none() => None,
            Some(e) => {
                if jsonl::field_level(name) != Some(level) {
                    return Err(invalid(py, format!(
                        "space `{name}`: a space with an embedder must be named after a text field of its level (trajectory: {}; step: {})",
                        jsonl::TRAJECTORY_FIELDS.join(", "), jsonl::STEP_FIELDS.join(", "))));
                }
                let emb = if let Ok(s) = e.downcast::<PyString>() {
                    if s.to_cow()? != "hash" {
                        return Err(invalid(
                            py,
                            format!("embedder {:?} is not \"hash\" or a callable", s.to_cow()?),
                        ));
                    }
                    Emb::Hash(HashEmbedder::new(dims).map_err(|e| to_py(py, e))?)
                } else if e.is_callable() {
                    let name = e
                        .getattr("name")
                        .or_else(|_| e.getattr("__qualname__"))
                        .and_then(|n| n.str().map(|s| s.to_string()))
                        .unwrap_or_else(|_| type_name(e));
                    let version = e
                        .getattr("version")
                        .and_then(|v| v.str().map(|s| s.to_string()))
                        .unwrap_or_else(|_| "1".into());
                    Emb::Py {
                        f: e.clone().unbind(),
                        id: EmbedderId {
                            name,
                            version,
                            dims,
                        },
                    }
                } else {
                    return Err(invalid(
                        py,
                        format!(
                            "embedder must be None, \"hash\" or a callable, got {}",
                            type_name(e)
                        ),
                    ));
                };
                def = def.with_embedder(emb.id());
                Some(emb)
            }
        };
        if let Some(old) = db.spaces().into_iter().find(|s| s.name == def.name) {
            if old != def {
                return Err(invalid(
                    py,
                    format!(
                        "key space `{name}` already exists with a different definition: it is {}; asked for {}",
                        trajdb::import::describe(&old),
                        trajdb::import::describe(&def)
                    ),
                ));
            }
        }
        run(py, || db.create_space(&def))?;
        if let Some(emb) = emb {
            lock(&self.embedders).insert(name.to_owned(), Arc::new(emb));
        }
        Ok(())
    }

    /// The key spaces in creation order, each a dict: name, level, dims, metric, elem,
    /// embedder (None or {name, version, dims}).
    fn spaces<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let db = self.handle(py)?;
        to_object(py, &db.spaces())
    }

    /// Appends one trajectory dict (JSONL record shape; keys float32 (dims,), step_keys
    /// (n_steps, dims)) as one atomic commit; returns its id. Raises InvalidInputError,
    /// ReadOnlyError, StorageError.
    fn append(&self, py: Python<'_>, trajectory: &Bound<'_, PyAny>) -> PyResult<u64> {
        let db = self.handle(py)?;
        let spaces = db.spaces();
        let t = self.prepare(py, trajectory, &spaces, "trajectory")?;
        run(py, || db.append(&t))
    }

    /// Appends trajectory dicts in order with one sync for the batch; returns their ids. Every
    /// record is checked first: a bad one refuses the whole batch (InvalidInputError naming
    /// trajectories[i]).
    fn append_many(&self, py: Python<'_>, trajectories: &Bound<'_, PyAny>) -> PyResult<Vec<u64>> {
        let db = self.handle(py)?;
        let spaces = db.spaces();
        let mut batch = Vec::new();
        let mut seen = std::collections::HashSet::new();
        let items = trajectories.try_iter().map_err(|_| {
            invalid(
                py,
                format!(
                    "append_many takes an iterable of trajectory dicts, got {}",
                    type_name(trajectories)
                ),
            )
        })?;
        for (i, item) in items.enumerate() {
            let at = format!("trajectories[{i}]");
            let t = self.prepare(py, &item?, &spaces, &at)?;
            if let Some(id) = t.id {
                if !seen.insert(id) {
                    return Err(invalid(
                        py,
                        format!("{at}: id {id} is given twice in the batch"),
                    ));
                }
            }
            batch.push(t);
        }
        if !seen.is_empty() {
            let taken: Vec<u64> = db
                .ids()
                .into_iter()
                .filter(|id| seen.contains(id))
                .collect();
            if let Some(id) = taken.first() {
                return Err(invalid(
                    py,
                    format!(
                        "trajectory id {id} is already stored; nothing in the batch was appended"
                    ),
                ));
            }
        }
        run(py, || db.append_many(&batch))
    }

    /// The trajectory dict, keys as float32 arrays (dims,) / (n_steps, dims). NotFoundError.
    fn get<'py>(&self, py: Python<'py>, id: UInt) -> PyResult<Bound<'py, PyAny>> {
        let id = id.get(py, "id")?;
        let db = self.handle(py)?;
        let t = run(py, || db.get(id))?;
        trajectory_dict(py, t)
    }

    /// Deletes (tombstones) a trajectory; compact() reclaims it. NotFoundError.
    fn delete(&self, py: Python<'_>, id: UInt) -> PyResult<()> {
        let id = id.get(py, "id")?;
        let db = self.handle(py)?;
        run(py, || db.delete(id))
    }

    /// Sets a trajectory's outcome after the fact. NotFoundError, InvalidInputError.
    #[pyo3(signature = (id, success, reward=None))]
    fn set_outcome(
        &self,
        py: Python<'_>,
        id: UInt,
        success: Option<&Bound<'_, PyAny>>,
        reward: Option<f64>,
    ) -> PyResult<()> {
        let id = id.get(py, "id")?;
        let success = opt_bool(success, "set_outcome: success")?;
        if let Some(r) = reward.filter(|r| !r.is_finite()) {
            return Err(invalid(
                py,
                format!("outcome.reward: value {r} is not a finite number"),
            ));
        }
        let db = self.handle(py)?;
        run(py, || db.set_outcome(id, Outcome { success, reward }))
    }

    /// Ids of live trajectories in commit order.
    fn ids(&self, py: Python<'_>) -> PyResult<Vec<u64>> {
        Ok(self.handle(py)?.ids())
    }

    fn __len__(&self, py: Python<'_>) -> PyResult<usize> {
        Ok(self.handle(py)?.ids().len())
    }

    fn __contains__(&self, py: Python<'_>, id: UInt) -> PyResult<bool> {
        let Ok(id) = id.0 else {
            return Ok(false);
        };
        let db = self.handle(py)?;
        run(py, || Ok(db.get(id).is_ok()))
    }

    /// Sequence number of the last commit (0 for an empty database).
    #[getter]
    fn commit_seq(&self, py: Python<'_>) -> PyResult<u64> {
        Ok(self.handle(py)?.commit_seq())
    }

    /// Top-k of key space `space` by similarity to `vector` (float32, shape (dims,)), best
    /// first, as Hit(id, step, score); filters apply inside the scan or the walk. `exact`:
    /// None (default) the automatic choice: through the space's graph index when it has
    /// one and at least `exact_below_rows` rows (an option of `open`, default 20000), else
    /// the exact scan; True always the exact scan; False always the graph (search_approx).
    /// `ef` is the graph walk's beam width. Scores are exact on every path.
    /// search_with_path() also says which path answered. GIL released. Raises
    /// InvalidInputError (unknown space, dims, NaN, not 1-D, ef 0, k 0 with exact=False).
    #[pyo3(signature = (space, vector, k=UInt(Ok(10)), *, success_only=false, env=None, task=None, exclude=None, provenance=None, as_of=None, exact=None, ef=UInt(Ok(64))), text_signature = "($self, space, vector, k=10, *, success_only=False, env=None, task=None, exclude=None, provenance=None, as_of=None, exact=None, ef=64)")]
    #[allow(clippy::too_many_arguments)]
    fn search(
        &self,
        py: Python<'_>,
        space: &str,
        vector: &Bound<'_, PyAny>,
        k: UInt,
        success_only: bool,
        env: Option<String>,
        task: Option<String>,
        exclude: Option<&Bound<'_, PyAny>>,
        provenance: Option<&str>,
        as_of: Option<UInt>,
        exact: Option<bool>,
        ef: UInt,
    ) -> PyResult<Vec<PyHit>> {
        self.handle(py)?;
        let f = filter(py, success_only, env, task, exclude, provenance, as_of)?;
        let (hits, _) = self.search_in(py, space, Ok(vector), &k, f, exact, &ef)?;
        Ok(hits)
    }

    /// search(), also returning the name of the path that answered: "graph",
    /// "exact_requested", "exact_below_threshold", "exact_no_graph",
    /// "exact_selective_filter", "exact_short" or "exact_wide_beam" (ef at least a quarter
    /// of the rows). Same arguments and errors as search().
    #[pyo3(signature = (space, vector, k=UInt(Ok(10)), *, success_only=false, env=None, task=None, exclude=None, provenance=None, as_of=None, exact=None, ef=UInt(Ok(64))), text_signature = "($self, space, vector, k=10, *, success_only=False, env=None, task=None, exclude=None, provenance=None, as_of=None, exact=None, ef=64)")]
    #[allow(clippy::too_many_arguments)]
    fn search_with_path(
        &self,
        py: Python<'_>,
        space: &str,
        vector: &Bound<'_, PyAny>,
        k: UInt,
        success_only: bool,
        env: Option<String>,
        task: Option<String>,
        exclude: Option<&Bound<'_, PyAny>>,
        provenance: Option<&str>,
        as_of: Option<UInt>,
        exact: Option<bool>,
        ef: UInt,
    ) -> PyResult<(Vec<PyHit>, &'static str)> {
        self.handle(py)?;
        let f = filter(py, success_only, env, task, exclude, provenance, as_of)?;
        self.search_in(py, space, Ok(vector), &k, f, exact, &ef)
    }

    /// Approximate top-k through the space's graph index (Database::search_approx): `ef`
    /// is the beam width; hit scores are exact, filters apply during the walk, and the exact
    /// scan answers when there is no graph, the filter passes few rows or the walk comes back
    /// short, so k hits come back when k rows qualify. GIL released. Raises
    /// InvalidInputError as search().
    #[pyo3(signature = (space, vector, k=UInt(Ok(10)), ef=UInt(Ok(64)), *, success_only=false, env=None, task=None, exclude=None, provenance=None, as_of=None), text_signature = "($self, space, vector, k=10, ef=64, *, success_only=False, env=None, task=None, exclude=None, provenance=None, as_of=None)")]
    #[allow(clippy::too_many_arguments)]
    fn search_approx(
        &self,
        py: Python<'_>,
        space: &str,
        vector: &Bound<'_, PyAny>,
        k: UInt,
        ef: UInt,
        success_only: bool,
        env: Option<String>,
        task: Option<String>,
        exclude: Option<&Bound<'_, PyAny>>,
        provenance: Option<&str>,
        as_of: Option<UInt>,
    ) -> PyResult<Vec<PyHit>> {
        let db = self.handle(py)?;
        let f = filter(py, success_only, env, task, exclude, provenance, as_of)?;
        let k = approx_k(py, &k)?;
        let ef = beam(py, &ef)?;
        let q = vec1(py, vector, "vector")?;
        let hits = run(py, || db.search_approx(space, &q, k, ef, &f))?;
        self.warn_discarded_graphs(py, &db, [space])?;
        Ok(hits.into_iter().map(PyHit::from).collect())
    }

    /// Builds (or catches up) the graph index of `space` (Database::build_graph) and writes
    /// its file; returns {"nodes", "rows", "m", "ef_construction"}. GIL released. Raises
    /// InvalidInputError (unknown space, m outside 2..=128, ef_construction outside
    /// m..=4096), ReadOnlyError.
    #[pyo3(signature = (space, m=UInt(Ok(16)), ef_construction=UInt(Ok(100))), text_signature = "($self, space, m=16, ef_construction=100)")]
    fn build_graph<'py>(
        &self,
        py: Python<'py>,
        space: &str,
        m: UInt,
        ef_construction: UInt,
    ) -> PyResult<Bound<'py, PyDict>> {
        let db = self.handle(py)?;
        let params = trajdb::GraphParams {
            m: ranged(py, &m, "m", "2..=128", "half the neighbour slots per node")?,
            ef_construction: ranged(
                py,
                &ef_construction,
                "ef_construction",
                "m..=4096",
                "the beam width of an insertion",
            )?,
        };
        let st = run(py, || db.build_graph(space, params))?;
        let d = PyDict::new(py);
        d.set_item("nodes", st.nodes)?;
        d.set_item("rows", st.rows)?;
        d.set_item("m", st.params.m)?;
        d.set_item("ef_construction", st.params.ef_construction)?;
        Ok(d)
    }

    /// Removes the graph index of `space` and its file (Database::drop_graph).
    fn drop_graph(&self, py: Python<'_>, space: &str) -> PyResult<()> {
        let db = self.handle(py)?;
        run(py, || db.drop_graph(space))
    }

    /// Checks every key space's graph now (rows against the log, adjacency against its
    /// checksum; reads each graph file once) rather than at its first search; a damaged
    /// graph is dropped and stats()["spaces"][i]["graph_discarded"] says why
    /// (Database::check_graphs). GIL released.
    fn check_graphs(&self, py: Python<'_>) -> PyResult<()> {
        let db = self.handle(py)?;
        run(py, || {
            db.check_graphs();
            Ok(())
        })
    }

    /// search() for many queries in one pass over the rows (Database::search_many):
    /// `vectors` float32 of shape (m, dims); returns m lists of Hit, list i exactly what
    /// search(space, vectors[i], k, ...) returns. GIL released. Raises InvalidInputError
    /// (unknown space, not 2-D, dims, NaN; the bad row is named).
    #[pyo3(signature = (space, vectors, k=UInt(Ok(10)), *, success_only=false, env=None, task=None, exclude=None, provenance=None, as_of=None), text_signature = "($self, space, vectors, k=10, *, success_only=False, env=None, task=None, exclude=None, provenance=None, as_of=None)")]
    #[allow(clippy::too_many_arguments)]
    fn search_many(
        &self,
        py: Python<'_>,
        space: &str,
        vectors: &Bound<'_, PyAny>,
        k: UInt,
        success_only: bool,
        env: Option<String>,
        task: Option<String>,
        exclude: Option<&Bound<'_, PyAny>>,
        provenance: Option<&str>,
        as_of: Option<UInt>,
    ) -> PyResult<Vec<Vec<PyHit>>> {
        let db = self.handle(py)?;
        let f = filter(py, success_only, env, task, exclude, provenance, as_of)?;
        let k = k.get_usize(py, "k")?;
        let qs = vec2(py, vectors, "vectors", "m")?;
        let many = run(py, || db.search_many(space, &qs, k, &f))?;
        Ok(many
            .into_iter()
            .map(|hits| hits.into_iter().map(PyHit::from).collect())
            .collect())
    }

    /// search() with `text` embedded by the space's embedder (`exact` and `ef` as there).
    /// InvalidInputError if none.
    #[pyo3(signature = (space, text, k=UInt(Ok(10)), *, success_only=false, env=None, task=None, exclude=None, provenance=None, as_of=None, exact=None, ef=UInt(Ok(64))), text_signature = "($self, space, text, k=10, *, success_only=False, env=None, task=None, exclude=None, provenance=None, as_of=None, exact=None, ef=64)")]
    #[allow(clippy::too_many_arguments)]
    fn search_text(
        &self,
        py: Python<'_>,
        space: &str,
        text: &Bound<'_, PyString>,
        k: UInt,
        success_only: bool,
        env: Option<String>,
        task: Option<String>,
        exclude: Option<&Bound<'_, PyAny>>,
        provenance: Option<&str>,
        as_of: Option<UInt>,
        exact: Option<bool>,
        ef: UInt,
    ) -> PyResult<Vec<PyHit>> {
        self.handle(py)?;
        let f = filter(py, success_only, env, task, exclude, provenance, as_of)?;
        let (hits, _) = self.search_in(py, space, Err(text), &k, f, exact, &ef)?;
        Ok(hits)
    }

    /// The paper's retrieval: mean similarity over `keys` (trajectory spaces; vectors
    /// (dims,) or text), plus the best step of `step_key` (a step space); each Example keeps
    /// `window` steps around the matched step. `exact`: None (default) the automatic
    /// choice: through the graph indexes (Database::retrieve_approx) when every key space of
    /// the query has one and at least `exact_below_rows` rows, else exactly
    /// (Database::retrieve); True always exact; False always the graphs. `ef` is the beam
    /// width. retrieve_with_path() also says which path answered. GIL released.
    #[pyo3(signature = (keys, step_key=None, k=UInt(Ok(10)), window=UInt(Ok(5)), *, success_only=true, env=None, task=None, exclude=None, provenance=None, as_of=None, exact=None, ef=UInt(Ok(64))), text_signature = "($self, keys, step_key=None, k=10, window=5, *, success_only=True, env=None, task=None, exclude=None, provenance=None, as_of=None, exact=None, ef=64)")]
    #[allow(clippy::too_many_arguments)]
    fn retrieve(
        &self,
        py: Python<'_>,
        keys: &Bound<'_, PyAny>,
        step_key: Option<&Bound<'_, PyAny>>,
        k: UInt,
        window: UInt,
        success_only: bool,
        env: Option<String>,
        task: Option<String>,
        exclude: Option<&Bound<'_, PyAny>>,
        provenance: Option<&str>,
        as_of: Option<UInt>,
        exact: Option<bool>,
        ef: UInt,
    ) -> PyResult<Vec<PyExample>> {
        let (examples, _) = self.retrieve_in(
            py,
            keys,
            step_key,
            k,
            window,
            success_only,
            env,
            task,
            exclude,
            provenance,
            as_of,
            exact,
            ef,
        )?;
        examples_py(py, examples)
    }

    /// retrieve(), also returning which path answered, as a dict: "path" ("graph",
    /// "exact_requested", "exact_below_threshold" or "exact_no_graph"), "decided_by" (the
    /// key space that made an automatic retrieve exact, else None) and "spaces" (for a
    /// retrieve through the graphs: key space name to the path of its candidate search).
    /// Same arguments and errors as retrieve().
    #[pyo3(signature = (keys, step_key=None, k=UInt(Ok(10)), window=UInt(Ok(5)), *, success_only=true, env=None, task=None, exclude=None, provenance=None, as_of=None, exact=None, ef=UInt(Ok(64))), text_signature = "($self, keys, step_key=None, k=10, window=5, *, success_only=True, env=None, task=None, exclude=None, provenance=None, as_of=None, exact=None, ef=64)")]
    #[allow(clippy::too_many_arguments)]
    fn retrieve_with_path<'py>(
        &self,
        py: Python<'py>,
        keys: &Bound<'py, PyAny>,
        step_key: Option<&Bound<'py, PyAny>>,
        k: UInt,
        window: UInt,
        success_only: bool,
        env: Option<String>,
        task: Option<String>,
        exclude: Option<&Bound<'py, PyAny>>,
        provenance: Option<&str>,
        as_of: Option<UInt>,
        exact: Option<bool>,
        ef: UInt,
    ) -> PyResult<(Vec<PyExample>, Bound<'py, PyDict>)> {
        let (examples, p) = self.retrieve_in(
            py,
            keys,
            step_key,
            k,
            window,
            success_only,
            env,
            task,
            exclude,
            provenance,
            as_of,
            exact,
            ef,
        )?;
        Ok((examples_py(py, examples)?, retrieve_path_dict(py, &p)?))
    }

    /// The approximate retrieval (Database::retrieve_approx): retrieve() with candidates
    /// from the key spaces' graph indexes (build them with build_graph; spaces without one
    /// are scanned exactly); `ef` is the beam width (at least k is used). Same arguments,
    /// results and errors as retrieve(), plus `ef`. Its recall against retrieve() is in
    /// docs/benchmarks.md. GIL released.
    #[pyo3(signature = (keys, step_key=None, k=UInt(Ok(10)), window=UInt(Ok(5)), ef=UInt(Ok(64)), *, success_only=true, env=None, task=None, exclude=None, provenance=None, as_of=None), text_signature = "($self, keys, step_key=None, k=10, window=5, ef=64, *, success_only=True, env=None, task=None, exclude=None, provenance=None, as_of=None)")]
    #[allow(clippy::too_many_arguments)]
    fn retrieve_approx(
        &self,
        py: Python<'_>,
        keys: &Bound<'_, PyAny>,
        step_key: Option<&Bound<'_, PyAny>>,
        k: UInt,
        window: UInt,
        ef: UInt,
        success_only: bool,
        env: Option<String>,
        task: Option<String>,
        exclude: Option<&Bound<'_, PyAny>>,
        provenance: Option<&str>,
        as_of: Option<UInt>,
    ) -> PyResult<Vec<PyExample>> {
        let ef = beam(py, &ef)?;
        approx_k(py, &k)?;
        let q = self.retrieve_query(
            py,
            keys,
            step_key,
            k,
            window,
            success_only,
            env,
            task,
            exclude,
            provenance,
            as_of,
        )?;
        let db = self.handle(py)?;
        let examples = run(py, || db.retrieve_approx(&q, ef))?;
        self.warn_discarded_graphs(py, &db, query_spaces(&q))?;
        examples_py(py, examples)
    }

    /// retrieve(), also returning the work the call did, as a dict: `step_rows_scored`
    /// (step-key rows scored), `trajectories_visited` (trajectories whose step rows were
    /// scored) and `step_bounds_read` (trajectories whose step-key bound was read); all 0
    /// without a step key. Same arguments, results and errors as retrieve().
    #[pyo3(signature = (keys, step_key=None, k=UInt(Ok(10)), window=UInt(Ok(5)), *, success_only=true, env=None, task=None, exclude=None, provenance=None, as_of=None), text_signature = "($self, keys, step_key=None, k=10, window=5, *, success_only=True, env=None, task=None, exclude=None, provenance=None, as_of=None)")]
    #[allow(clippy::too_many_arguments)]
    fn retrieve_with_work<'py>(
        &self,
        py: Python<'py>,
        keys: &Bound<'py, PyAny>,
        step_key: Option<&Bound<'py, PyAny>>,
        k: UInt,
        window: UInt,
        success_only: bool,
        env: Option<String>,
        task: Option<String>,
        exclude: Option<&Bound<'py, PyAny>>,
        provenance: Option<&str>,
        as_of: Option<UInt>,
    ) -> PyResult<(Vec<PyExample>, Bound<'py, PyDict>)> {
        let q = self.retrieve_query(
            py,
            keys,
            step_key,
            k,
            window,
            success_only,
            env,
            task,
            exclude,
            provenance,
            as_of,
        )?;
        let db = self.handle(py)?;
        let (examples, work) = run(py, || db.retrieve_with_work(&q))?;
        let w = PyDict::new(py);
        w.set_item("step_rows_scored", work.step_rows_scored)?;
        w.set_item("trajectories_visited", work.trajectories_visited)?;
        w.set_item("step_bounds_read", work.step_bounds_read)?;
        Ok((examples_py(py, examples)?, w))
    }

    /// Begins an episode and returns it as a context manager.
    fn episode(slf: &Bound<'_, Self>) -> PyResult<PyEpisode> {
        let py = slf.py();
        let id = slf.get().begin_episode(py)?;
        Ok(PyEpisode {
            db: slf.clone().unbind(),
            id,
            outcome: Mutex::new(None),
        })
    }

    /// Begins an episode; returns its id (see `episode()` for the context manager).
    fn begin_episode(&self, py: Python<'_>) -> PyResult<u64> {
        let db = self.handle(py)?;
        run(py, || db.begin_episode())
    }

    /// Logs retrievals (Example, Hit or trajectory ids) of `episode` at `stage`
    /// ("plan"|"reason"|"act"|"other"), one commit. NotFoundError for unknown ids.
    #[pyo3(signature = (episode, items, stage="other"))]
    fn log_retrievals(
        &self,
        py: Python<'_>,
        episode: UInt,
        items: &Bound<'_, PyAny>,
        stage: &str,
    ) -> PyResult<()> {
        let episode = episode.get(py, "episode")?;
        self.log_to(py, episode, items, stage)
    }

    /// Sets, changes or (None) clears an episode's outcome; Q follows. NotFoundError.
    #[pyo3(signature = (episode, success))]
    fn set_episode_outcome(
        &self,
        py: Python<'_>,
        episode: UInt,
        success: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let episode = episode.get(py, "episode")?;
        let success = opt_bool(success, "set_episode_outcome: success")?;
        self.outcome_to(py, episode, success)
    }

    /// Every episode as a dict: id, created_ms, outcome (True/False/None), events (list of
    /// {id, step, stage}).
    fn episodes<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let db = self.handle(py)?;
        let out = PyList::empty(py);
        for ep in db.episodes() {
            let d = PyDict::new(py);
            d.set_item("id", ep.id)?;
            d.set_item("created_ms", ep.created_ms)?;
            d.set_item("outcome", ep.outcome)?;
            d.set_item("events", to_object(py, &ep.events)?)?;
            out.append(d)?;
        }
        Ok(out)
    }

    /// Usage counters and Q of live trajectory `id` (zeros when never retrieved).
    /// NotFoundError for an id that is not stored.
    fn utility(&self, py: Python<'_>, id: UInt) -> PyResult<PyUtility> {
        let id = id.get(py, "id")?;
        let db = self.handle(py)?;
        // The engine answers zeros for any id; an id that is not stored is an error here.
        if !db.contains(id) {
            return Err(to_py(
                py,
                trajdb::Error::NotFound {
                    kind: "trajectory",
                    id,
                },
            ));
        }
        Ok(db.utility(id).into())
    }

    /// Usage counters of every trajectory ever retrieved, by id.
    fn utilities(&self, py: Python<'_>) -> PyResult<HashMap<u64, PyUtility>> {
        Ok(self
            .handle(py)?
            .utilities()
            .into_iter()
            .map(|(id, u)| (id, u.into()))
            .collect())
    }

    /// Merges the database `src` into this one: every trajectory and usage event of `src`
    /// lands here exactly once (a repeat adds nothing, a grown source adds what is new).
    /// Returns what was added as a dict (trajectories, trajectories_present, episodes,
    /// retrievals, ...). InvalidInputError for a source with incompatible key spaces or
    /// without an origin id (nothing is written then).
    fn merge_from<'py>(
        &self,
        py: Python<'py>,
        src: PyRef<'py, PyDatabase>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let db = self.handle(py)?;
        let from = src.handle(py)?;
        if Arc::ptr_eq(&db, &from) {
            return Err(invalid(py, "src is this database itself"));
        }
        let r = run(py, || db.merge_from(&from))?;
        to_object(py, &r)
    }

    /// The origin id of this database (a random 64-bit number; trajectories and episodes
    /// written here are named by it across databases), or None for a log written before
    /// origin ids (`compact` gives it one).
    #[getter]
    fn origin(&self, py: Python<'_>) -> PyResult<Option<u64>> {
        Ok(self.handle(py)?.origin())
    }

    /// Writes a consistent copy of the database into the new directory `dst`.
    fn fork(&self, py: Python<'_>, dst: PathBuf) -> PyResult<()> {
        let db = self.handle(py)?;
        run(py, || db.fork(&dst))
    }

    /// Rewrites the log without deleted trajectories; ids and counters are kept.
    fn compact(&self, py: Python<'_>) -> PyResult<()> {
        let db = self.handle(py)?;
        run(py, || db.compact())
    }

    /// Checks every frame and key row against the log; returns counts. CorruptError.
    fn verify<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let db = self.handle(py)?;
        let r = run(py, || db.verify())?;
        to_object(py, &r)
    }

    /// Counts and sizes, as `trajdb stats` prints them, as a dict.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let db = self.handle(py)?;
        let s = run(py, || Ok(db.stats()))?;
        to_object(py, &s)
    }

    /// What opening found, as a dict: "truncated_bytes" and "torn_reason" (a damaged log
    /// tail cut by a writer or skipped by a reader), "cut_file", "checkpoint_end",
    /// "checkpoint_ignored", "log_cut_at" ([log length, covered end] when the log ends
    /// before its own checkpoint: committed frames are missing), "damaged_committed_end"
    /// (the checkpoint's covered end when the damaged tail lies before it: damage at rest,
    /// which a writable open refuses unless accept_log_cut=True). `open` also warns
    /// (RuntimeWarning) when a tail was cut or committed frames are missing.
    fn open_report<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let db = self.handle(py)?;
        let report = to_object(py, db.open_report())?;
        // Damage to the checkpoint found after open (the handle then answers from the log).
        report.set_item("checkpoint_damage", db.checkpoint_damage())?;
        Ok(report)
    }

    /// Makes every commit so far durable (for durability="buffered").
    fn sync(&self, py: Python<'_>) -> PyResult<()> {
        let db = self.handle(py)?;
        run(py, || db.sync())
    }

    /// Read-only handles: applies a writer's commits since opening; returns the records
    /// applied (0 for a writable handle).
    fn refresh(&self, py: Python<'_>) -> PyResult<u64> {
        let db = self.handle(py)?;
        let n = run(py, || db.refresh())?;
        self.register_hash_spaces(&db);
        Ok(n)
    }

    /// Writes the trajectories to `path` as `trajdb export` does ("jsonl": key-space header
    /// then one record a line; "chat": {"messages": [...]} a line); returns records written.
    #[pyo3(signature = (path, format="jsonl", *, success_only=false))]
    fn export(
        &self,
        py: Python<'_>,
        path: PathBuf,
        format: &str,
        success_only: bool,
    ) -> PyResult<u64> {
        let db = self.handle(py)?;
        let chat = match format {
            "jsonl" => false,
            "chat" => true,
            _ => {
                return Err(invalid(
                    py,
                    format!("format {format:?} is not one of \"jsonl\", \"chat\""),
                ))
            }
        };
        let written = run(py, || {
            let io = |e| trajdb::Error::Io {
                op: "write",
                path: path.clone(),
                source: e,
            };
            let file = std::fs::File::create(&path).map_err(io)?;
            let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
            let mut line = |v: &dyn erased::Ser| -> trajdb::Result<()> {
                let s = v
                    .json()
                    .map_err(|e| trajdb::Error::invalid("export", e.to_string()))?;
                out.write_all(s.as_bytes())
                    .and_then(|()| out.write_all(b"\n"))
                    .map_err(io)
            };
            if !chat {
                line(&SpacesHeader {
                    trajdb_spaces: db.spaces(),
                })?;
            }
            let mut n = 0u64;
            for id in db.ids() {
                let t = db.get(id)?;
                if success_only && t.outcome.success != Some(true) {
                    continue;
                }
                if chat {
                    match chat_example(&t) {
                        Some(ex) => line(&ex)?,
                        None => continue,
                    }
                } else {
                    line(&t)?;
                }
                n += 1;
            }
            out.flush().map_err(io)?;
            out.get_ref().sync_all().map_err(io)?;
            Ok(n)
        });
        if written.is_err() {
            // No partial export is left behind (the error says why).
            let _ = std::fs::remove_file(&path);
        }
        written
    }
}

/// One JSON line from any of the export shapes.
mod erased {
    pub trait Ser {
        fn json(&self) -> serde_json::Result<String>;
    }
    impl<T: serde::Serialize> Ser for T {
        fn json(&self) -> serde_json::Result<String> {
            serde_json::to_string(self)
        }
    }
}

// ---------------------------------------------------------------------------------------
// Episode context manager

/// An episode: `with db.episode() as ep: ...; ep.log(examples, stage="plan"); ep.outcome = True`.
#[pyclass(module = "trajdb", name = "Episode", frozen)]
struct PyEpisode {
    db: Py<PyDatabase>,
    #[pyo3(get)]
    id: u64,
    outcome: Mutex<Option<bool>>,
}

#[pymethods]
impl PyEpisode {
    fn __repr__(&self) -> String {
        let outcome = match *lock(&self.outcome) {
            Some(true) => "True",
            Some(false) => "False",
            None => "None",
        };
        format!("Episode(id={}, outcome={outcome})", self.id)
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&self, _args: &Bound<'_, PyTuple>) -> bool {
        false
    }

    #[pyo3(signature = (items, stage="other"))]
    fn log(&self, py: Python<'_>, items: &Bound<'_, PyAny>, stage: &str) -> PyResult<()> {
        self.db.get().log_to(py, self.id, items, stage)
    }

    /// The episode's outcome: True, False or None (unknown). Setting it commits at once.
    #[getter]
    fn outcome(&self) -> Option<bool> {
        *lock(&self.outcome)
    }

    #[setter]
    fn set_outcome(&self, py: Python<'_>, value: &Bound<'_, PyAny>) -> PyResult<()> {
        let value = opt_bool(Some(value), "Episode.outcome")?;
        self.db.get().outcome_to(py, self.id, value)?;
        *lock(&self.outcome) = value;
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// Module

/// Opens (by default creating) the database in directory `path`. durability "sync" (each
/// commit synced), "group" (concurrent commits share a sync) or "buffered"; read_only takes
/// no lock; exact_below_rows: search and retrieve scan a key space exactly below this many
/// rows even when it has a graph index (Options::exact_below_rows); accept_log_cut: open
/// for writing a log cut short before the commits its checkpoint records, or whose last
/// frames are damaged although its checkpoint records them as committed, giving them up
/// (Options::accept_log_cut; without it such a writable open raises CorruptError). Raises
/// LockedError, NotADatabaseError, CorruptError, IncompatibleVersionError.
#[pyfunction]
#[pyo3(signature = (path, *, durability="sync", read_only=false, create=true, exact_below_rows=UInt(Ok(trajdb::DEFAULT_EXACT_BELOW_ROWS)), accept_log_cut=false), text_signature = "(path, *, durability='sync', read_only=False, create=True, exact_below_rows=20000, accept_log_cut=False)")]
#[allow(clippy::too_many_arguments)]
fn open(
    py: Python<'_>,
    path: PathBuf,
    durability: &str,
    read_only: bool,
    create: bool,
    exact_below_rows: UInt,
    accept_log_cut: bool,
) -> PyResult<PyDatabase> {
    let opts = Options {
        durability: self::durability(py, durability)?,
        read_only,
        create,
        exact_below_rows: exact_below_rows.get(py, "exact_below_rows")?,
        accept_log_cut,
        ..Options::default()
    };
    let p = path.clone();
    let db = run(py, move || match Database::open(&p, opts) {
        // A missing directory that may not be created is "not a database", not an I/O fault.
        Err(trajdb::Error::Io { source, path, .. })
            if source.kind() == std::io::ErrorKind::NotFound =>
        {
            Err(trajdb::Error::NotADatabase {
                path,
                why: "it does not exist".into(),
            })
        }
        r => r,
    })?;
    let this = PyDatabase {
        db: RwLock::new(Some(Arc::new(db))),
        path,
        read_only,
        embedders: Mutex::new(HashMap::new()),
        graph_warned: Mutex::new(std::collections::HashSet::new()),
    };
    if let Some(db) = this.db.read().ok().and_then(|d| d.clone()) {
        this.register_hash_spaces(&db);
        let r = db.open_report();
        let mut warnings = Vec::new();
        if r.truncated_bytes > 0 {
            warnings.push(match r.damaged_committed_end {
                Some(covered) => format!(
                    "{}: {} bytes of damaged log at its end were {} ({}); its checkpoint records them as committed (up to byte {covered}): damage at rest, those commits are missing from every answer{}",
                    this.path.display(),
                    r.truncated_bytes,
                    if read_only { "skipped" } else { "cut" },
                    r.torn_reason.as_deref().unwrap_or("unknown reason"),
                    if read_only {
                        "; a writable open refuses this log unless accept_log_cut=True, which cuts them for good"
                    } else {
                        " (accept_log_cut=True)"
                    }
                ),
                None => format!(
                    "{}: {} bytes of damaged log tail after the last complete commit were {} ({})",
                    this.path.display(),
                    r.truncated_bytes,
                    if read_only {
                        "skipped (the next writer cuts them)"
                    } else {
                        "cut"
                    },
                    r.torn_reason.as_deref().unwrap_or("unknown reason")
                ),
            });
        }
        if let Some((len, covered)) = r.log_cut_at {
            let next = if read_only {
                "restore the log from a copy if you have one; a writable open refuses this log unless accept_log_cut=True, which makes the loss permanent"
            } else {
                "accepted (accept_log_cut=True): this handle's next checkpoint records the shorter log, and the loss is permanent"
            };
            warnings.push(format!(
                "{}: the log ends at byte {len} but its checkpoint recorded commits up to byte {covered}: committed frames are missing ({next})",
                this.path.display()
            ));
        }
        for w in warnings {
            runtime_warning(py, w)?;
        }
    }
    Ok(this)
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(open, m)?)?;
    m.add_class::<PyDatabase>()?;
    m.add_class::<PyHit>()?;
    m.add_class::<PyExample>()?;
    m.add_class::<PyUtility>()?;
    m.add_class::<PyEpisode>()?;
    Ok(())
}
