//! Regular expressions compiled once, at plan time, instead of once per batch.
//!
//! DataFusion's `~`, `regexp_like`, `regexp_match` and `regexp_replace` compile their pattern on
//! every call, that is for every batch a rule evaluates. A pattern with Unicode classes
//! (`\s`, `[^{}]`) takes longer to compile than to run over the few rows that reach it: the
//! workload rules spent 27 µs per row on it. A call whose pattern (and flags and replacement)
//! are literals is planned as a [`PreparedRegex`] holding the compiled pattern, computing
//! what the DataFusion and arrow kernels compute (their pattern, flag and replacement rules
//! are repeated here, and a test compares both on the pack's own patterns).

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, BooleanArray, ListBuilder, StringArray, StringBuilder};
use datafusion::arrow::buffer::BooleanBuffer;
use datafusion::arrow::datatypes::{DataType, Field};
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{exec_err, DFSchema, Result, ScalarValue};
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::{
    ColumnarValue, Expr, ExprSchemable, Operator, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use regex::Regex;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Op {
    /// `~`, `~*`, `regexp_like`; negated: `!~`, `!~*`.
    IsMatch { negated: bool },
    /// `regexp_match`: the capture groups of the first match (the whole match without groups).
    Captures,
    /// `regexp_replace`: `limit` matches (0: all) replaced by `replacement` (in `regex` syntax).
    Replace { replacement: String, limit: usize },
}

/// A regular-expression function of one string argument, its pattern compiled once.
#[derive(Debug)]
pub struct PreparedRegex {
    /// The function it stands for, as plans and errors show it.
    name: &'static str,
    regex: Regex,
    op: Op,
    signature: Signature,
}

impl PartialEq for PreparedRegex {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name && self.regex.as_str() == other.regex.as_str() && self.op == other.op
    }
}
impl Eq for PreparedRegex {}
impl Hash for PreparedRegex {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.regex.as_str().hash(state);
    }
}

impl ScalarUDFImpl for PreparedRegex {
    fn name(&self) -> &str {
        self.name
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(match self.op {
            Op::IsMatch { .. } => DataType::Boolean,
            Op::Captures => DataType::List(Arc::new(Field::new_list_field(DataType::Utf8, true))),
            Op::Replace { .. } => DataType::Utf8,
        })
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let arr = args.args[0].to_array(args.number_rows)?;
        let Some(strings) = arr.as_string_opt::<i32>() else {
            return exec_err!("{}: expected a string, got {}", self.name, arr.data_type());
        };
        let out: ArrayRef = match &self.op {
            Op::IsMatch { negated } => {
                let values = BooleanBuffer::collect_bool(strings.len(), |i| {
                    strings.is_valid(i) && self.regex.is_match(strings.value(i)) != *negated
                });
                Arc::new(BooleanArray::new(values, strings.nulls().cloned()))
            }
            Op::Captures => {
                let mut list = ListBuilder::new(StringBuilder::new());
                for v in strings.iter() {
                    match v.and_then(|v| self.regex.captures(v)) {
                        Some(caps) => {
                            // Without groups the whole match; with groups each one that took part.
                            let mut groups = caps.iter();
                            if caps.len() > 1 {
                                groups.next();
                            }
                            for m in groups.flatten() {
                                list.values().append_value(m.as_str());
                            }
                            list.append(true);
                        }
                        None => list.append(false),
                    }
                }
                Arc::new(list.finish())
            }
            Op::Replace { replacement, limit } => {
                Arc::new(strings.iter().map(|v| v.map(|v| self.regex.replacen(v, *limit, replacement.as_str()))).collect::<StringArray>())
            }
        };
        Ok(ColumnarValue::Array(out))
    }
}

/// `e` with each regular-expression call on a string column whose pattern, flags and
/// replacement are literals replaced by a [`PreparedRegex`]. Anything else (a pattern read
/// from a column, an empty pattern, a flag DataFusion refuses) is left to DataFusion.
pub fn prepare(e: &Expr, schema: &DFSchema) -> Result<Expr> {
    Ok(e.clone().transform_up(|node| Ok(prepared(&node, schema)?.map_or_else(|| Transformed::no(node), Transformed::yes)))?.data)
}

fn prepared(node: &Expr, schema: &DFSchema) -> Result<Option<Expr>> {
    let text = |e: &Expr| match e {
        Expr::Literal(ScalarValue::Utf8(Some(s)), _) => Some(s.clone()),
        _ => None,
    };
    let (name, subject, pattern, op): (&'static str, &Expr, String, Op) = match node {
        Expr::BinaryExpr(b) => {
            let (insensitive, negated) = match b.op {
                Operator::RegexMatch => (false, false),
                Operator::RegexIMatch => (true, false),
                Operator::RegexNotMatch => (false, true),
                Operator::RegexNotIMatch => (true, true),
                _ => return Ok(None),
            };
            let Some(p) = text(&b.right) else { return Ok(None) };
            let p = if insensitive { format!("(?i){p}") } else { p };
            ("regexp_like", b.left.as_ref(), p, Op::IsMatch { negated })
        }
        Expr::ScalarFunction(f) => {
            let args: Option<Vec<String>> = f.args.iter().skip(1).map(text).collect();
            let (Some(args), Some(subject)) = (args, f.args.first()) else { return Ok(None) };
            // Flags go in front of the pattern, as the kernels put them.
            let flagged = |p: &str, flags: Option<&String>| match flags {
                Some(f) => format!("(?{f}){p}"),
                None => p.to_string(),
            };
            match (f.func.name(), args.as_slice()) {
                ("regexp_like", [p, rest @ ..]) if rest.len() <= 1 && !rest.iter().any(|f| f.contains('g')) => {
                    ("regexp_like", subject, flagged(p, rest.first()), Op::IsMatch { negated: false })
                }
                ("regexp_match", [p, rest @ ..]) if rest.len() <= 1 && !rest.iter().any(|f| f.contains('g')) => {
                    ("regexp_match", subject, flagged(p, rest.first()), Op::Captures)
                }
                ("regexp_replace", [p, r, rest @ ..]) if rest.len() <= 1 => {
                    // As datafusion-functions' regexp_replace: 'g' replaces every match, other
                    // flags go in front of the pattern, and \1 in the replacement is ${1}.
                    let (pattern, limit) = match rest.first().map(String::as_str) {
                        None => (p.clone(), 1),
                        Some("g") => (p.clone(), 0),
                        Some(flags) => (format!("(?{}){p}", flags.replace('g', "")), usize::from(!flags.contains('g'))),
                    };
                    ("regexp_replace", subject, pattern, Op::Replace { replacement: posix_groups(r), limit })
                }
                _ => return Ok(None),
            }
        }
        _ => return Ok(None),
    };
    // The kernels treat an empty pattern apart; leave those (and non-strings) to them.
    if pattern.is_empty() || subject.get_type(schema)? != DataType::Utf8 {
        return Ok(None);
    }
    let Ok(regex) = Regex::new(&pattern) else {
        return Ok(None); // DataFusion reports the error, in its words
    };
    let udf = PreparedRegex { name, regex, op, signature: Signature::any(1, Volatility::Immutable) };
    Ok(Some(Expr::ScalarFunction(ScalarFunction::new_udf(Arc::new(ScalarUDF::new_from_impl(udf)), vec![subject.clone()]))))
}

/// `\1` (or `\\1`) in a replacement as `${1}`, as datafusion-functions' regexp_replace does.
fn posix_groups(replacement: &str) -> String {
    static GROUPS: std::sync::LazyLock<Regex> = std::sync::LazyLock::new(|| Regex::new(r"\\{1,2}(\d+)").expect("valid pattern"));
    GROUPS.replace_all(replacement, "$${$1}").into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::datatypes::Schema;
    use datafusion::arrow::record_batch::RecordBatch;
    use datafusion::prelude::SessionContext;

    /// Every rule pattern form, on values that match, do not, and NULL: the prepared call and
    /// DataFusion's own give the same column.
    #[tokio::test]
    async fn prepared_calls_compute_what_datafusion_computes() {
        let values = StringArray::from(vec![
            Some(r#"{"securityContext":{"capabilities":{"add":["NET_ADMIN", "CAP_SYS_ADMIN"]}}}"#),
            Some(r#"{"allowPrivilegeEscalation": true}"#),
            Some(r#"[{"op":"add","path":"/spec/allowPrivilegeEscalation","value":true}]"#),
            Some("nginx:latest quay.io/x/y@sha256:ab"),
            Some("Bearer eyJhbGciOi.abc.def"),
            Some(""),
            None,
            Some("ÄÖ système CAP_net_raw"),
        ]);
        let schema = Arc::new(Schema::new(vec![Field::new("s", DataType::Utf8, true)]));
        let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(values)]).unwrap();
        let ctx = SessionContext::new();
        ctx.register_batch("t", batch.clone()).unwrap();
        let df_schema = DFSchema::try_from(schema.as_ref().clone()).unwrap();
        let exprs = [
            r#"s ~ '"allowPrivilegeEscalation"\s*:\s*true|/allowPrivilegeEscalation"[^}]*"value"\s*:\s*true'"#,
            r#"s ~* 'bearer\s+[a-z0-9]'"#,
            r#"s !~ 'latest'"#,
            r#"s !~* 'CAP_'"#,
            r#"regexp_like(s, '(^| )([^@/ ]*/)*[^@/: ]+(:latest)?( |$)')"#,
            r#"regexp_like(s, 'SYSTÈME', 'i')"#,
            r#"regexp_match(s, '"capabilities"\s*:\s*\{[^{}]*"add"\s*:\s*\[([^\]]*)\]')"#,
            r#"regexp_match(s, 'CAP_[a-z_]+', 'i')"#,
            r#"regexp_match(s, '(x)?(latest)')"#,
            r#"regexp_replace(upper(s), '[\s"]|CAP_', '', 'g')"#,
            r#"regexp_replace(s, '([a-z]+):(latest)', '\2-\1')"#,
            r#"regexp_replace(s, 'a', 'A', 'gi')"#,
            r#"regexp_replace(s, 'A', '_', 'i')"#,
        ];
        for sql in exprs {
            let expected = ctx.sql(&format!("SELECT {sql} FROM t")).await.unwrap().collect().await.unwrap();
            let logical = ctx.parse_sql_expr(sql, &df_schema).unwrap();
            let prepared_expr = prepare(&logical, &df_schema).unwrap();
            assert_ne!(format!("{prepared_expr:?}"), format!("{logical:?}"), "{sql} is prepared");
            let physical = ctx.create_physical_expr(prepared_expr, &df_schema).unwrap();
            let got = physical.evaluate(&batch).unwrap().into_array(batch.num_rows()).unwrap();
            let want = expected[0].column(0);
            assert_eq!(got.data_type(), want.data_type(), "{sql}");
            assert_eq!(&got, want, "{sql}");
        }
    }

    #[test]
    fn a_pattern_from_a_column_or_an_empty_one_is_left_to_datafusion() {
        let schema = Schema::new(vec![Field::new("s", DataType::Utf8, true), Field::new("p", DataType::Utf8, true)]);
        let df_schema = DFSchema::try_from(schema).unwrap();
        let ctx = SessionContext::new();
        for sql in ["s ~ p", "regexp_like(s, '')", "regexp_match(s, 'a', 'g')", "s LIKE 'a%'"] {
            let e = ctx.parse_sql_expr(sql, &df_schema).unwrap();
            assert_eq!(format!("{:?}", prepare(&e, &df_schema).unwrap()), format!("{e:?}"), "{sql}");
        }
    }
}
