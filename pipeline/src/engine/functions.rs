//! SQL functions Crowsnest adds to DataFusion: the window markers `TUMBLE` and `HOP` used in
//! GROUP BY, and the list functions (`in_list`, `starts_with_any`, `path_under`, `ip_in_list`)
//! over `detections/lists`.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, BooleanArray, TimestampNanosecondArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, IntervalMonthDayNano, TimeUnit};
use datafusion::common::{exec_err, plan_err, Result, ScalarValue};
use datafusion::logical_expr::{ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility};

use crate::rules::{List, Lists};
use crate::tables::timestamp_type;

/// Nanoseconds of a fixed-length interval literal (`INTERVAL '5 minutes'`); months are refused
/// because their length varies.
pub fn interval_nanos(v: &ScalarValue) -> Result<i64> {
    let nanos = match v {
        ScalarValue::IntervalMonthDayNano(Some(IntervalMonthDayNano { months, days, nanoseconds })) => {
            if *months != 0 {
                return plan_err!("window sizes in months are not supported; use days");
            }
            *days as i64 * 86_400_000_000_000 + nanoseconds
        }
        ScalarValue::IntervalDayTime(Some(dt)) => dt.days as i64 * 86_400_000_000_000 + dt.milliseconds as i64 * 1_000_000,
        other => return plan_err!("a window size must be an INTERVAL literal, got {other}"),
    };
    if nanos <= 0 {
        return plan_err!("a window size must be positive");
    }
    Ok(nanos)
}

/// `TUMBLE(ts, width)` and `HOP(ts, slide, width)`. In a rule they mark the window of a GROUP
/// BY and the engine assigns windows itself (HOP puts an event in width/slide windows). Called
/// as plain functions (hunts, batch checks) they return the start of the newest window
/// containing `ts`.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct WindowFn {
    name: &'static str,
    signature: Signature,
}

impl WindowFn {
    pub fn tumble() -> ScalarUDF {
        ScalarUDF::new_from_impl(WindowFn { name: "tumble", signature: Signature::any(2, Volatility::Immutable) })
    }
    pub fn hop() -> ScalarUDF {
        ScalarUDF::new_from_impl(WindowFn { name: "hop", signature: Signature::any(3, Volatility::Immutable) })
    }
    pub fn session() -> ScalarUDF {
        ScalarUDF::new_from_impl(WindowFn { name: "session", signature: Signature::any(2, Volatility::Immutable) })
    }
}

impl ScalarUDFImpl for WindowFn {
    fn name(&self) -> &str {
        self.name
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        match args.first() {
            Some(DataType::Timestamp(_, _)) => Ok(timestamp_type()),
            other => plan_err!("{}() takes a timestamp column first, got {other:?}", self.name),
        }
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        if self.name == "session" {
            // A session's start depends on the events around it, not on one timestamp.
            return exec_err!("session() is a window of streaming rules (GROUP BY …, SESSION(event_time, gap)); it has no value per row");
        }
        // The step that aligns window starts: the width for TUMBLE, the slide for HOP.
        let step = match &args.args[1] {
            ColumnarValue::Scalar(s) => interval_nanos(s)?,
            _ => return exec_err!("{}() needs an INTERVAL literal", self.name),
        };
        let ts = args.args[0].to_array(args.number_rows)?;
        let ts = cast(&ts, &DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())))?;
        let ts = ts.as_primitive::<datafusion::arrow::datatypes::TimestampNanosecondType>();
        let out: TimestampNanosecondArray = ts.unary(|t| t - t.rem_euclid(step));
        Ok(ColumnarValue::Array(Arc::new(out.with_timezone("UTC"))))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum ListOp {
    Exact,
    Prefix,
    Path,
    Ip,
    /// The entries are regular expressions.
    Regex,
}

/// A list function; it holds the lists, loaded once.
#[derive(Debug)]
pub struct ListFn {
    name: &'static str,
    op: ListOp,
    /// The `any_*_outside` forms: true when some element does NOT match (an image outside the
    /// allowed registries), where the plain forms are true when some element does.
    outside: bool,
    lists: Arc<Lists>,
    signature: Signature,
}

impl PartialEq for ListFn {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name && Arc::ptr_eq(&self.lists, &other.lists)
    }
}
impl Eq for ListFn {}
impl Hash for ListFn {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.name.hash(state)
    }
}

/// Names of the list functions; the engine checks their list arguments at plan time.
pub const LIST_FUNCTIONS: &[&str] = &[
    "in_list",
    "starts_with_any",
    "path_under",
    "ip_in_list",
    "matches_any",
    "any_outside_list",
    "any_without_prefix",
    "any_ip_outside_list",
    "first_match",
];

/// List functions whose list holds regular expressions (checked to compile at plan time).
pub const PATTERN_FUNCTIONS: &[&str] = &["matches_any", "first_match"];

impl ListFn {
    pub fn all(lists: Arc<Lists>) -> Vec<ScalarUDF> {
        [
            ("in_list", ListOp::Exact, false),
            ("starts_with_any", ListOp::Prefix, false),
            ("path_under", ListOp::Path, false),
            ("ip_in_list", ListOp::Ip, false),
            ("matches_any", ListOp::Regex, false),
            ("any_outside_list", ListOp::Exact, true),
            ("any_without_prefix", ListOp::Prefix, true),
            ("any_ip_outside_list", ListOp::Ip, true),
        ]
        .into_iter()
        .map(|(name, op, outside)| {
            ScalarUDF::new_from_impl(ListFn {
                name,
                op,
                outside,
                lists: lists.clone(),
                signature: Signature::any(2, Volatility::Immutable),
            })
        })
        .chain([ScalarUDF::new_from_impl(FirstMatch { lists: lists.clone(), signature: Signature::any(2, Volatility::Immutable) })])
        .collect()
    }

    fn test(&self, list: &List, s: &str) -> bool {
        let hit = match self.op {
            ListOp::Exact => list.contains(s),
            ListOp::Prefix => list.any_prefix_of(s),
            ListOp::Path => list.path_under(s),
            // Something that is not an address is neither inside nor outside a range.
            ListOp::Ip if self.outside && s.trim().parse::<std::net::IpAddr>().is_err() => return false,
            ListOp::Ip => list.contains_ip(s),
            ListOp::Regex => list.patterns().is_ok_and(|p| p.is_match(s)),
        };
        hit != self.outside
    }

    fn test_strings(&self, list: &List, arr: &ArrayRef) -> Result<BooleanArray> {
        let arr = if arr.data_type() == &DataType::Utf8 { arr.clone() } else { cast(arr, &DataType::Utf8)? };
        let strings = arr.as_string::<i32>();
        // A plain bool per row (NULL tests false): the fast BooleanArray constructor.
        if matches!(self.op, ListOp::Ip | ListOp::Regex) {
            // Addresses and patterns cost a parse or a scan, and a batch repeats few distinct
            // values (a node's address on every call it makes): each is tested once per batch.
            let mut seen: std::collections::HashMap<&str, bool, ahash::RandomState> = Default::default();
            let hits = (0..strings.len())
                .map(|i| strings.is_valid(i) && *seen.entry(strings.value(i)).or_insert_with_key(|s| self.test(list, s)))
                .collect::<Vec<bool>>();
            return Ok(BooleanArray::from(hits));
        }
        Ok(BooleanArray::from((0..strings.len()).map(|i| strings.is_valid(i) && self.test(list, strings.value(i))).collect::<Vec<bool>>()))
    }
}

impl ScalarUDFImpl for ListFn {
    fn name(&self) -> &str {
        self.name
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        match args {
            [DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Null | DataType::List(_) | DataType::LargeList(_), DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8] => {
                Ok(DataType::Boolean)
            }
            _ => plan_err!("{}(value, 'list name') takes a string or a list of strings and a list name, got {args:?}", self.name),
        }
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let list = list_argument(self.name, &self.lists, &args)?;
        let arr = args.args[0].to_array(args.number_rows)?;
        let out = match arr.data_type() {
            DataType::Null => BooleanArray::from(vec![false; arr.len()]),
            DataType::List(_) | DataType::LargeList(_) => {
                let arr = cast(&arr, &DataType::List(Arc::new(datafusion::arrow::datatypes::Field::new("item", DataType::Utf8, true))))?;
                let lists = arr.as_list::<i32>();
                // Every element tested once, in one pass over the values; a row hits when any
                // of its elements does.
                let offsets = lists.value_offsets();
                let first = offsets.first().map_or(0, |&o| o as usize);
                let last = offsets.last().map_or(0, |&o| o as usize);
                let hits = self.test_strings(list, &lists.values().slice(first, last - first))?;
                let hits = hits.values();
                let out: Vec<bool> = (0..lists.len())
                    .map(|i| lists.is_valid(i) && (offsets[i] as usize..offsets[i + 1] as usize).any(|j| hits.value(j - first)))
                    .collect();
                BooleanArray::from(out)
            }
            _ => self.test_strings(list, &arr)?,
        };
        Ok(ColumnarValue::Array(Arc::new(out)))
    }
}

/// The list a list function's second argument names.
fn list_argument<'l>(function: &str, lists: &'l Lists, args: &ScalarFunctionArgs) -> Result<&'l List> {
    let name = match &args.args[1] {
        ColumnarValue::Scalar(ScalarValue::Utf8(Some(s)) | ScalarValue::Utf8View(Some(s)) | ScalarValue::LargeUtf8(Some(s))) => s,
        _ => return exec_err!("{function}(): the list name must be a string literal"),
    };
    match lists.get(name) {
        Some(list) => Ok(list),
        None => exec_err!("{function}(): no list named {name:?}"),
    }
}

/// `first_match(text, 'list')`: the first entry of a list of regular expressions that matches
/// the text (NULL when none does), so an alert says which pattern fired.
#[derive(Debug)]
pub struct FirstMatch {
    lists: Arc<Lists>,
    signature: Signature,
}

impl PartialEq for FirstMatch {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.lists, &other.lists)
    }
}
impl Eq for FirstMatch {}
impl Hash for FirstMatch {
    fn hash<H: Hasher>(&self, state: &mut H) {
        "first_match".hash(state)
    }
}

impl ScalarUDFImpl for FirstMatch {
    fn name(&self) -> &str {
        "first_match"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        match args {
            [DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Null, DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8] => {
                Ok(DataType::Utf8)
            }
            _ => plan_err!("first_match(text, 'list name') takes a string and a list name, got {args:?}"),
        }
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let list = list_argument("first_match", &self.lists, &args)?;
        let arr = cast(&args.args[0].to_array(args.number_rows)?, &DataType::Utf8)?;
        let out: datafusion::arrow::array::StringArray =
            arr.as_string::<i32>().iter().map(|s| s.and_then(|s| list.first_match(s))).collect();
        Ok(ColumnarValue::Array(Arc::new(out)))
    }
}

/// The 128-bit hash `count(DISTINCT string)` keeps of each value in a window group (see
/// `engine::aggregates`): 16 bytes and no allocation per distinct value (counting distinct
/// audit ids sees nothing but new values). Two different values would have to collide in 128
/// bits to be counted once: for a billion distinct values the odds are about 1 in 10^20.
pub(crate) fn hash128(s: &str) -> u128 {
    let (a, b) = hash128_seeds();
    ((a.hash_one(s) as u128) << 64) | b.hash_one(s) as u128
}

/// The two independently seeded 64-bit hashers behind [`hash128`], for callers that hash
/// values other than one string the same way.
pub(crate) fn hash128_seeds() -> &'static (ahash::RandomState, ahash::RandomState) {
    use std::sync::LazyLock;
    static SEEDS: LazyLock<(ahash::RandomState, ahash::RandomState)> = LazyLock::new(|| {
        (
            ahash::RandomState::with_seeds(0x243f_6a88_85a3_08d3, 0x1319_8a2e_0370_7344, 0xa409_3822_299f_31d0, 0x082e_fa98_ec4e_6c89),
            ahash::RandomState::with_seeds(0x4528_21e6_38d0_1377, 0xbe54_66cf_34e9_0c6c, 0xc0ac_29b7_c97c_50dd, 0x3f84_d5b5_b547_0917),
        )
    });
    &SEEDS
}

/// Calls `f` on every list of the first `state()` column (what `merge_batch` gets back from
/// accumulators whose state is one list of values).
fn each_state_list(states: &[ArrayRef], mut f: impl FnMut(&dyn Array) -> Result<()>) -> Result<()> {
    let Some(lists) = states.first() else {
        return Ok(());
    };
    let lists = lists.as_list::<i32>();
    (0..lists.len()).filter(|&i| lists.is_valid(i)).try_for_each(|i| f(lists.value(i).as_ref()))
}

/// Values `array_agg` keeps per group: an alert shows a sample, and a key that sees millions of
/// values (an attacker's doing, or a badly chosen column) must not grow one group without end.
pub const ARRAY_AGG_LIMIT: usize = 100;

/// `array_agg(x)` / `array_agg(DISTINCT x)` in a windowed rule: the first
/// [`ARRAY_AGG_LIMIT`] values (distinct ones, with DISTINCT) in arrival order.
#[derive(Debug)]
pub struct BoundedArrayAgg {
    distinct: bool,
    data_type: DataType,
    values: Vec<ScalarValue>,
    bytes: usize,
}

impl BoundedArrayAgg {
    pub fn new(distinct: bool, data_type: DataType) -> Self {
        BoundedArrayAgg { distinct, data_type, values: Vec::new(), bytes: 0 }
    }

    fn push_all(&mut self, array: &dyn Array) -> Result<()> {
        if let (true, Some(strings)) = (self.distinct, array.as_string_opt::<i32>()) {
            // Compared as &str: no value is built for the repeats, which are most rows.
            for v in strings.iter().flatten() {
                if self.values.len() >= ARRAY_AGG_LIMIT {
                    break;
                }
                if !self.values.iter().any(|x| matches!(x, ScalarValue::Utf8(Some(s)) if s == v)) {
                    let v = ScalarValue::Utf8(Some(v.to_string()));
                    self.bytes += v.size();
                    self.values.push(v);
                }
            }
            return Ok(());
        }
        for i in 0..array.len() {
            if self.values.len() >= ARRAY_AGG_LIMIT {
                break;
            }
            let v = ScalarValue::try_from_array(array, i)?;
            if self.distinct && (v.is_null() || self.values.contains(&v)) {
                continue;
            }
            self.bytes += v.size();
            self.values.push(v);
        }
        Ok(())
    }
}

impl datafusion::logical_expr::Accumulator for BoundedArrayAgg {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        match values.first() {
            Some(v) => self.push_all(v.as_ref()),
            None => Ok(()),
        }
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        if self.values.is_empty() {
            // As DataFusion's array_agg: NULL for a group without values.
            return ScalarValue::try_new_null(&self.list_type());
        }
        Ok(ScalarValue::List(ScalarValue::new_list_nullable(&self.values, &self.data_type)))
    }

    fn size(&self) -> usize {
        std::mem::size_of::<Self>() + self.bytes
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        Ok(vec![ScalarValue::List(ScalarValue::new_list_nullable(&self.values, &self.data_type))])
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        each_state_list(states, |values| self.push_all(values))
    }
}

impl BoundedArrayAgg {
    fn list_type(&self) -> DataType {
        DataType::List(Arc::new(datafusion::arrow::datatypes::Field::new_list_field(self.data_type.clone(), true)))
    }
}
