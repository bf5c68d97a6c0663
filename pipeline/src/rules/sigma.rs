//! `crowsnest rules import-sigma`: Sigma rules for Kubernetes audit logs (SigmaHQ's
//! rules/cloud/kubernetes/audit, formerly rules/application/kubernetes) into Crowsnest rules, one
//! file each, that run unchanged.
//!
//! Supported: `logsource: {product: kubernetes, service: audit | audit.k8s.io/v1}`; the fields of
//! [`FIELD_MAP`]; selections as maps (fields ANDed) or lists of maps (ORed); value lists (ORed,
//! or ANDed with `|all`); `*` and `?` wildcards; the modifiers `contains`, `startswith`,
//! `endswith`, `all`, `re` (with `i`, `m`, `s`), `cased`, `exists`, `gt`, `gte`, `lt`, `lte`;
//! conditions with `and`, `or`, `not`, parentheses, `1 of X*`, `all of X*`, `1 of them`,
//! `all of them`. Matching is case-insensitive, as in Sigma (except `re` and `cased`); on list
//! columns a value matches when some element does. Anything else — keyword selections,
//! aggregations (`| count()`), `timeframe`, correlations, fields with no Kubernetes audit
//! column, other modifiers, values that can never match — makes that rule fail with a message
//! naming the selection, field and construct; the other rules still convert.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_yaml::Value;

use super::catalog::THREAT_MATRIX;

/// Sigma field → kube_audit column, and whether the column is a list of strings.
///
/// The names are those of the audit.k8s.io/v1 Event, as SigmaHQ's `rules/cloud/kubernetes/audit`
/// (formerly `rules/application/kubernetes/audit`) rules write them, plus the short forms those
/// rules also use for the object's parts (`apiGroup`, `resource`, …) and for pod-spec facts.
pub const FIELD_MAP: &[(&str, &str, Kind)] = &[
    ("verb", "verb", Kind::Text),
    ("objectRef.resource", "resource", Kind::Text),
    ("objectRef.subresource", "subresource", Kind::Text),
    ("objectRef.namespace", "namespace", Kind::Text),
    ("objectRef.name", "name", Kind::Text),
    ("objectRef.apiGroup", "api_group", Kind::Text),
    ("objectRef.apiVersion", "api_version", Kind::Text),
    // The Event has no top-level fields of these names: SigmaHQ's rules mean the object's
    // (kubernetes_audit_sidecar_injection and …_rbac_permisions_listing write `apiGroup`).
    ("apiGroup", "api_group", Kind::Text),
    ("resource", "resource", Kind::Text),
    ("subresource", "subresource", Kind::Text),
    ("namespace", "namespace", Kind::Text),
    ("name", "name", Kind::Text),
    ("user.username", "user_name", Kind::Text),
    ("user.uid", "user_uid", Kind::Text),
    ("user.groups", "user_groups", Kind::List),
    ("impersonatedUser.username", "impersonated_user", Kind::Text),
    ("sourceIPs", "source_ips", Kind::List),
    ("userAgent", "user_agent", Kind::Text),
    ("requestURI", "request_uri", Kind::Text),
    ("responseStatus.code", "response_code", Kind::Number),
    ("responseStatus.reason", "response_reason", Kind::Text),
    ("stage", "stage", Kind::Text),
    ("level", "level", Kind::Text),
    ("auditID", "audit_id", Kind::Text),
    ("annotations.authorization.k8s.io/decision", "authz_decision", Kind::Text),
    ("annotations.authorization.k8s.io/reason", "authz_reason", Kind::Text),
    ("requestObject.kind", "object_kind", Kind::Text),
    // The whole objects as JSON text: `requestObject|contains: …` searches them.
    ("requestObject", "request_object", Kind::Text),
    ("responseObject", "response_object", Kind::Text),
    // Not audit Event fields: SigmaHQ's pod rules use these names for the pod spec's facts.
    ("hostPath", "host_path_mounts", Kind::List),
    ("capabilities", "added_capabilities", Kind::List),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Text,
    Number,
    List,
}

/// What one Sigma file became.
pub struct Imported {
    pub source: PathBuf,
    /// The rule file written, or why the rule was not converted.
    pub outcome: Result<PathBuf, String>,
}

/// Converts the Sigma rule at `path` (or every .yml/.yaml below it) into `out_dir`.
pub fn import_path(path: &Path, out_dir: &Path) -> anyhow::Result<Vec<Imported>> {
    let files = if path.is_dir() { sigma_files(path)? } else { vec![path.to_path_buf()] };
    if files.is_empty() {
        anyhow::bail!("no .yml or .yaml files under {}", path.display());
    }
    std::fs::create_dir_all(out_dir).map_err(|e| anyhow::anyhow!("creating {}: {e}", out_dir.display()))?;
    let mut out = Vec::new();
    for f in files {
        let outcome = std::fs::read_to_string(&f).map_err(|e| format!("cannot read it: {e}")).and_then(|text| convert(&text)).and_then(
            |(id, yaml)| {
                let target = out_dir.join(format!("{id}.yaml"));
                std::fs::write(&target, yaml).map_err(|e| format!("cannot write {}: {e}", target.display()))?;
                Ok(target)
            },
        );
        out.push(Imported { source: f, outcome });
    }
    Ok(out)
}

fn sigma_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let p = entry?.path();
        if p.is_dir() {
            out.extend(sigma_files(&p)?);
        } else if matches!(p.extension().and_then(|e| e.to_str()), Some("yml") | Some("yaml")) {
            out.push(p);
        }
    }
    out.sort();
    Ok(out)
}

/// The Crowsnest rule written for a Sigma rule.
#[derive(Serialize)]
struct Converted {
    id: String,
    title: String,
    description: String,
    severity: &'static str,
    mitre: Vec<String>,
    threat_matrix: Vec<String>,
    tags: Vec<String>,
    false_positives: String,
    entities: Vec<&'static str>,
    suppress: &'static str,
    query: String,
}

/// Columns every converted rule selects: who, from where, what.
const OUTPUT: &str = "user_name, source_ip, user_agent, verb, resource, subresource, namespace, name, request_uri, response_code";

/// One Sigma rule's text → (Crowsnest rule id, rule file text), or why not.
pub fn convert(text: &str) -> Result<(String, String), String> {
    let docs: Vec<Value> = serde_yaml::Deserializer::from_str(text)
        .map(Value::deserialize)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("not valid YAML: {e}"))?;
    let [doc] = docs.as_slice() else {
        return Err(format!("{} YAML documents: rule collections (action: global) are not supported", docs.len()));
    };
    let s = |k: &str| doc.get(k).and_then(Value::as_str).map(str::trim).map(str::to_string);
    if doc.get("correlation").is_some() {
        return Err("correlation rules are not supported; write a windowed or sequence rule".into());
    }
    let title = s("title").ok_or("no title")?;
    let sigma_id = s("id").ok_or("no id")?;
    let logsource = doc.get("logsource").ok_or("no logsource")?;
    let (product, service) = (logsource.get("product").and_then(Value::as_str), logsource.get("service").and_then(Value::as_str));
    // SigmaHQ's rules/application/kubernetes wrote `service: audit`, rules/cloud/kubernetes
    // writes the Event's apiVersion, `audit.k8s.io/v1`.
    let audit = service.is_some_and(|s| s == "audit" || s.starts_with("audit.k8s.io"));
    if product != Some("kubernetes") || !audit {
        return Err(format!(
            "logsource is product: {}, service: {} — only kubernetes audit rules convert (product: kubernetes, service: audit or audit.k8s.io/v1)",
            product.unwrap_or("(none)"),
            service.unwrap_or("(none)")
        ));
    }
    let detection = doc.get("detection").and_then(Value::as_mapping).ok_or("no detection block")?;
    if let Some(t) = detection.get("timeframe") {
        return Err(format!(
            "timeframe {} (an aggregation over time) is not supported; write a windowed rule (GROUP BY … TUMBLE)",
            short(t)
        ));
    }
    let condition = match detection.get("condition") {
        Some(Value::String(c)) => c.clone(),
        Some(Value::Sequence(cs)) => {
            let cs: Vec<&str> = cs.iter().filter_map(Value::as_str).collect();
            cs.iter().map(|c| format!("({c})")).collect::<Vec<_>>().join(" or ")
        }
        _ => return Err("no condition".into()),
    };
    if let Some((_, aggregation)) = condition.split_once('|') {
        return Err(format!(
            "aggregation `|{}` in the condition is not supported; write a windowed rule (GROUP BY … TUMBLE … HAVING)",
            aggregation.trim_end()
        ));
    }
    let mut selections = Vec::new();
    for (k, v) in detection {
        let name = k.as_str().ok_or("a detection key that is not a string")?;
        if name != "condition" {
            selections.push((name.to_string(), selection_sql(name, v)?));
        }
    }
    let predicate = Condition::parse(&condition, &selections)?;

    // Sigma tags are lower case; some rules write attack.T1485.
    let tags: Vec<String> =
        doc.get("tags").and_then(Value::as_sequence).into_iter().flatten().filter_map(Value::as_str).map(str::to_ascii_lowercase).collect();
    let mitre: Vec<String> = tags
        .iter()
        .filter_map(|t| t.strip_prefix("attack.t"))
        .filter(|t| t.chars().next().is_some_and(|c| c.is_ascii_digit()))
        .map(|t| format!("T{}", t.to_ascii_uppercase()))
        // Only well-formed ids, which the rule loader checks (found by fuzzing: `attack.t161&`).
        .filter(|t| super::is_mitre_id(t))
        .collect();
    // attack.t1078 is a technique, attack.g0032 a group, attack.s0002 software; the rest tactics.
    let is_id = |t: &str| t.len() > 1 && t.starts_with(['t', 'g', 's']) && t[1..2].chars().all(|c| c.is_ascii_digit());
    let tactics = tags.iter().filter_map(|t| t.strip_prefix("attack.")).filter(|t| !is_id(t)).map(|t| t.replace('_', "-"));
    let references: Vec<&str> =
        doc.get("references").and_then(Value::as_sequence).into_iter().flatten().filter_map(Value::as_str).collect();
    let short = sigma_id.split('-').next().unwrap_or(&sigma_id).to_string();
    let id = format!("SIGMA-{short}");
    let falsepositives: Vec<&str> =
        doc.get("falsepositives").and_then(Value::as_sequence).into_iter().flatten().filter_map(Value::as_str).collect();
    let converted = Converted {
        id: id.clone(),
        title,
        description: format!(
            "{}\n\nConverted from Sigma rule {sigma_id}{}.",
            s("description").unwrap_or_default(),
            s("author").map(|a| format!(" by {a}")).unwrap_or_default()
        ),
        severity: match s("level").as_deref() {
            Some("informational") => "informational",
            Some("low") => "low",
            Some("high") => "high",
            Some("critical") => "critical",
            _ => "medium",
        },
        mitre,
        threat_matrix: threat_matrix_cells(&references),
        tags: std::iter::once("sigma".to_string()).chain(tactics).collect(),
        false_positives: falsepositives.join(" "),
        entities: vec!["user_name"],
        suppress: "1h",
        query: format!("SELECT {OUTPUT}\nFROM kube_audit\nWHERE {predicate}\n"),
    };
    let yaml = serde_yaml::to_string(&converted).map_err(|e| format!("cannot write the rule: {e}"))?;
    Ok((id, format!("# Converted by `crowsnest rules import-sigma`; edit freely and add test cases.\n{yaml}")))
}

/// Threat Matrix cells named by the rule's references to the matrix's site
/// (…/Threat-Matrix-for-Kubernetes/techniques/Privileged%20container/).
fn threat_matrix_cells(references: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    for r in references {
        let Some((_, rest)) = r.split_once("Threat-Matrix-for-Kubernetes/techniques/") else { continue };
        let technique = rest.trim_end_matches('/').replace("%20", " ").to_ascii_lowercase();
        for cell in THREAT_MATRIX {
            let name = cell.split_once(" - ").map_or(*cell, |(_, t)| t).to_ascii_lowercase();
            if name == technique && !out.iter().any(|c: &String| c == cell) {
                out.push(cell.to_string());
            }
        }
    }
    out
}

/// A selection → SQL: a map ANDs its fields, a list of maps ORs them.
fn selection_sql(name: &str, v: &Value) -> Result<String, String> {
    match v {
        Value::Mapping(m) => {
            let mut parts = Vec::new();
            for (k, vals) in m {
                let key = k.as_str().ok_or_else(|| format!("selection {name}: a field name that is not a string"))?;
                parts.push(field_sql(key, vals).map_err(|e| format!("selection {name}: {e}"))?);
            }
            if parts.is_empty() {
                return Err(format!("selection {name} is empty"));
            }
            Ok(format!("({})", parts.join(" AND ")))
        }
        Value::Sequence(items) if items.iter().all(Value::is_mapping) => {
            let parts: Vec<String> = items.iter().map(|i| selection_sql(name, i)).collect::<Result<_, _>>()?;
            Ok(format!("({})", parts.join(" OR ")))
        }
        Value::Sequence(_) | Value::String(_) => {
            Err(format!("selection {name} is a keyword search (values with no field), which audit events have no column for"))
        }
        _ => Err(format!("selection {name} is neither a map of fields nor a list of maps")),
    }
}

/// The operation a field's modifiers ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Op {
    /// `eq` (no modifier), `contains`, `startswith`, `endswith`, `re`, `exists`, `gt`, `gte`,
    /// `lt` or `lte`.
    kind: &'static str,
    /// `|all`: every value must match, not one of them.
    all: bool,
    /// `|cased`: case-sensitive (Sigma matches ignore case otherwise).
    cased: bool,
    /// `|re|i`, `|re|m`, `|re|s`: the regular expression's flags.
    re_flags: &'static str,
}

/// Parses `field|mod1|mod2` modifiers, naming the one that is not supported and why.
fn modifiers(field: &str, mods: &[&str]) -> Result<Op, String> {
    let mut op = Op { kind: "eq", all: false, cased: false, re_flags: "" };
    let mut flags = String::new();
    for &m in mods {
        let kind = match m {
            "all" => {
                op.all = true;
                continue;
            }
            "cased" => {
                op.cased = true;
                continue;
            }
            "i" | "m" | "s" => {
                flags.push_str(m);
                continue;
            }
            "contains" => "contains",
            "startswith" => "startswith",
            "endswith" => "endswith",
            "re" => "re",
            "exists" => "exists",
            "gt" => "gt",
            "gte" => "gte",
            "lt" => "lt",
            "lte" => "lte",
            other => {
                let why = match other {
                    "windash" => "it varies Windows command-line dashes, which audit events do not have",
                    "base64" | "base64offset" => "it matches base64-encoded payloads, which audit fields are not",
                    "wide" | "utf16" | "utf16le" | "utf16be" => "it matches UTF-16 encodings, which audit fields are not",
                    "cidr" => "write the network ranges as a list and use ip_in_list(source_ips, 'LIST') in a Crowsnest rule",
                    "expand" => "its %placeholders% need values from a pipeline configuration",
                    "fieldref" => "comparing one field with another is not supported",
                    "neq" => "write `not` in the condition instead",
                    _ => "it is not a Sigma modifier this importer knows",
                };
                return Err(format!("field {field}: modifier |{other} is not supported: {why}"));
            }
        };
        if op.kind != "eq" {
            return Err(format!("field {field}: modifier chain |{}|{kind} is not supported (one of contains, startswith, endswith, re, exists, gt, gte, lt, lte per field)", op.kind));
        }
        op.kind = kind;
    }
    if !flags.is_empty() {
        if op.kind != "re" {
            return Err(format!("field {field}: modifiers |i, |m and |s apply to |re only"));
        }
        op.re_flags = match (flags.contains('i'), flags.contains('m'), flags.contains('s')) {
            (true, true, true) => "ims",
            (true, true, false) => "im",
            (true, false, true) => "is",
            (true, false, false) => "i",
            (false, true, true) => "ms",
            (false, true, false) => "m",
            (false, false, true) => "s",
            (false, false, false) => "",
        };
    }
    Ok(op)
}

/// Why a Sigma field has no column: the closest name that has one, or what the field is.
fn unknown_field(field: &str) -> String {
    let near = FIELD_MAP.iter().find(|(f, _, _)| f.eq_ignore_ascii_case(field)).map(|(f, _, _)| *f);
    let hint = if let Some(f) = near {
        format!("field names are case-sensitive: did you mean {f}?")
    } else if field == "apiVersion" {
        "apiVersion is the audit Event's own (audit.k8s.io/v1); the object's is objectRef.apiVersion".to_string()
    } else if field == "kind" {
        "kind is the audit Event's own (Event); the object's is requestObject.kind".to_string()
    } else if let Some(key) = field.strip_prefix("annotations.") {
        format!("annotation {key:?} has no column; only annotations.authorization.k8s.io/decision and …/reason do")
    } else if let Some(part) = field.strip_prefix("objectRef.") {
        format!("objectRef.{part} has no column; objectRef's mapped parts are resource, subresource, namespace, name, apiGroup, apiVersion")
    } else if ["Image", "CommandLine", "ParentImage", "TargetFilename", "file_path", "process", "User"].contains(&field) {
        "audit events record API requests, not processes or files".to_string()
    } else {
        "see the field mapping in detections/README.md".to_string()
    };
    format!("field {field:?} has no kube_audit column ({hint})")
}

fn field_sql(key: &str, vals: &Value) -> Result<String, String> {
    let mut parts = key.split('|');
    let field = parts.next().unwrap_or_default();
    let mods: Vec<&str> = parts.collect();
    let &(_, column, kind) = FIELD_MAP.iter().find(|(f, _, _)| *f == field).ok_or_else(|| unknown_field(field))?;
    let op = modifiers(field, &mods)?;
    let values: Vec<&Value> = match vals {
        Value::Sequence(vs) => vs.iter().collect(),
        v => vec![v],
    };
    if values.is_empty() {
        return Err(format!("field {field}: an empty list of values"));
    }
    let conds: Vec<String> = values.iter().map(|v| value_sql(field, column, kind, op, v)).collect::<Result<_, _>>()?;
    Ok(format!("({})", conds.join(if op.all { " AND " } else { " OR " })))
}

fn value_sql(field: &str, column: &str, kind: Kind, op: Op, v: &Value) -> Result<String, String> {
    let what = format!(
        "field {field} ({column}{})",
        match kind {
            Kind::Text => "",
            Kind::Number => ", a number",
            Kind::List => ", a list",
        }
    );
    let exists = || if kind == Kind::List { format!("coalesce(array_length({column}), 0) > 0") } else { format!("{column} IS NOT NULL") };
    if op.kind == "exists" {
        return match v {
            Value::Bool(true) => Ok(exists()),
            Value::Bool(false) => Ok(format!("NOT ({})", exists())),
            Value::String(s) if s.eq_ignore_ascii_case("true") => Ok(exists()),
            Value::String(s) if s.eq_ignore_ascii_case("false") => Ok(format!("NOT ({})", exists())),
            other => Err(format!("{what}: |exists takes true or false, not {}", short(other))),
        };
    }
    let text = match v {
        Value::Null => {
            return Ok(if kind == Kind::List {
                format!("({column} IS NULL OR array_length({column}) = 0)")
            } else {
                format!("{column} IS NULL")
            })
        }
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        other => return Err(format!("{what}: the value {} is not a string, number or null", short(other))),
    };
    if kind == Kind::Number {
        return number_sql(&what, column, op, &text);
    }
    if matches!(op.kind, "gt" | "gte" | "lt" | "lte") {
        return Err(format!("{what}: modifier |{} applies to numbers only", op.kind));
    }
    if op.kind == "re" {
        if kind == Kind::List {
            return Err(format!("{what}: |re over a list field is not supported (match elements with wildcards or |contains instead)"));
        }
        return regex_sql(&what, column, op, &text);
    }
    let pattern = match op.kind {
        "contains" => format!("*{text}*"),
        "startswith" => format!("{text}*"),
        "endswith" => format!("*{text}"),
        _ => text.clone(),
    };
    // Values containing the modifier's own wildcards keep Sigma's meaning: * and ? anywhere.
    let wildcard = has_wildcard(&pattern);
    if kind == Kind::List {
        if pattern == "*" {
            return Ok(exists());
        }
        let plain = unescape(&pattern);
        if !wildcard && (op.cased || !plain.chars().any(char::is_alphabetic)) {
            return Ok(format!("array_has({column}, {})", quote(&plain)));
        }
        // Some element matches: the elements one per line, the pattern anchored to a line.
        let flags = if op.cased { "(?m)" } else { "(?im)" };
        return Ok(format!("regexp_like(array_to_string({column}, chr(10)), {})", quote(&format!("{flags}^{}$", element_regex(&pattern)))));
    }
    let (like, eq) = if op.cased { ("LIKE", format!("{column} =")) } else { ("ILIKE", format!("lower({column}) =")) };
    if wildcard {
        Ok(format!("{column} {like} {} ESCAPE '\\'", quote(&like_pattern(&pattern))))
    } else {
        let plain = unescape(&pattern);
        Ok(format!("{eq} {}", quote(&if op.cased { plain } else { plain.to_lowercase() })))
    }
}

/// A numeric column (`responseStatus.code`): a number compares, a pattern (`4*`, `|startswith`)
/// matches its digits, anything else can never match.
fn number_sql(what: &str, column: &str, op: Op, text: &str) -> Result<String, String> {
    let sql_op = match op.kind {
        "eq" => "=",
        "gt" => ">",
        "gte" => ">=",
        "lt" => "<",
        "lte" => "<=",
        _ => "",
    };
    let digits = format!("CAST({column} AS VARCHAR)");
    if let Ok(n) = text.trim().parse::<i64>() {
        if !sql_op.is_empty() {
            return Ok(format!("{column} {sql_op} {n}"));
        }
    }
    match op.kind {
        "re" => regex_sql(what, &digits, op, text),
        "contains" | "startswith" | "endswith" | "eq" => {
            let pattern = match op.kind {
                "contains" => format!("*{text}*"),
                "startswith" => format!("{text}*"),
                "endswith" => format!("*{text}"),
                _ => text.to_string(),
            };
            let numeric = |s: &str| s.chars().all(|c| c.is_ascii_digit() || matches!(c, '*' | '?' | '-'));
            if (op.kind == "eq" && !has_wildcard(&pattern)) || !numeric(&pattern) {
                return Err(format!("{what}: the value {text:?} can never match a number"));
            }
            Ok(format!("{digits} LIKE {} ESCAPE '\\'", quote(&like_pattern(&pattern))))
        }
        other => Err(format!("{what}: |{other} needs a number, not {text:?}")),
    }
}

/// `|re`: the pattern must compile, as DataFusion's regexp_like reads it (Rust syntax).
fn regex_sql(what: &str, column: &str, op: Op, pattern: &str) -> Result<String, String> {
    let flags = if op.re_flags.is_empty() { String::new() } else { format!("(?{})", op.re_flags) };
    let full = format!("{flags}{pattern}");
    regex::Regex::new(&full).map_err(|e| {
        format!(
            "{what}: the |re pattern {pattern:?} is not a Rust regular expression (no look-around or back-references): {}",
            e.to_string().lines().last().unwrap_or_default().trim()
        )
    })?;
    Ok(format!("regexp_like({column}, {})", quote(&full)))
}

/// A Sigma value with `*`/`?` wildcards as a regular expression for one line (list element).
fn element_regex(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if matches!(chars.peek(), Some('*') | Some('?') | Some('\\')) => {
                out.push_str(&regex::escape(&chars.next().expect("peeked").to_string()));
            }
            '*' => out.push_str("[^\\n]*"),
            '?' => out.push_str("[^\\n]"),
            c => out.push_str(&regex::escape(&c.to_string())),
        }
    }
    out
}

/// A YAML value, shortly, for messages.
fn short(v: &Value) -> String {
    match v {
        Value::Mapping(_) => "a map".to_string(),
        Value::Sequence(_) => "a list".to_string(),
        Value::Tagged(_) => "a tagged value".to_string(),
        other => serde_yaml::to_string(other).unwrap_or_default().trim().to_string(),
    }
}

/// Whether a Sigma value has an unescaped `*` or `?`.
fn has_wildcard(s: &str) -> bool {
    let mut escaped = false;
    for c in s.chars() {
        match c {
            '\\' if !escaped => escaped = true,
            '*' | '?' if !escaped => return true,
            _ => escaped = false,
        }
    }
    false
}

/// Sigma's `\*`, `\?` and `\\` as plain characters.
fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\' && matches!(chars.peek(), Some('*') | Some('?') | Some('\\')) {
            out.push(chars.next().expect("peeked"));
        } else {
            out.push(c);
        }
    }
    out
}

/// A Sigma wildcard value as a LIKE pattern (escape `\`).
fn like_pattern(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if matches!(chars.peek(), Some('*') | Some('?') | Some('\\')) => {
                let next = chars.next().expect("peeked");
                if next == '\\' {
                    out.push_str("\\\\");
                } else {
                    out.push(next);
                }
            }
            '*' => out.push('%'),
            '?' => out.push('_'),
            '%' | '_' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// The condition expression: `sel1 and not (sel2 or 1 of filter_*)`.
struct Condition<'a> {
    tokens: Vec<String>,
    pos: usize,
    selections: &'a [(String, String)],
}

impl<'a> Condition<'a> {
    fn parse(text: &str, selections: &'a [(String, String)]) -> Result<String, String> {
        let spaced = text.replace('(', " ( ").replace(')', " ) ");
        let tokens = spaced.split_whitespace().map(str::to_string).collect();
        let mut c = Condition { tokens, pos: 0, selections };
        let sql = c.or()?;
        if c.pos != c.tokens.len() {
            return Err(format!("condition {text:?}: unexpected {:?}", c.tokens[c.pos]));
        }
        Ok(sql)
    }

    fn peek(&self) -> Option<&str> {
        self.tokens.get(self.pos).map(String::as_str)
    }

    fn next(&mut self) -> Option<String> {
        let t = self.tokens.get(self.pos).cloned();
        self.pos += 1;
        t
    }

    fn or(&mut self) -> Result<String, String> {
        self.joined("or", " OR ", Self::and)
    }

    fn and(&mut self) -> Result<String, String> {
        self.joined("and", " AND ", Self::not)
    }

    /// `operand (keyword operand)*` as SQL joined by `sql_op` (one operand: itself).
    fn joined(&mut self, keyword: &str, sql_op: &str, operand: fn(&mut Self) -> Result<String, String>) -> Result<String, String> {
        let mut parts = vec![operand(self)?];
        while self.peek().is_some_and(|t| t.eq_ignore_ascii_case(keyword)) {
            self.pos += 1;
            parts.push(operand(self)?);
        }
        Ok(if parts.len() == 1 { parts.remove(0) } else { format!("({})", parts.join(sql_op)) })
    }

    fn not(&mut self) -> Result<String, String> {
        if self.peek().is_some_and(|t| t.eq_ignore_ascii_case("not")) {
            self.pos += 1;
            // A missing field is not a match, so NOT of it must be true: NULL-safe negation.
            return Ok(format!("(NOT coalesce({}, false))", self.not()?));
        }
        self.atom()
    }

    fn atom(&mut self) -> Result<String, String> {
        let t = self.next().ok_or("condition ends too early")?;
        if t == "(" {
            let inner = self.or()?;
            return match self.next().as_deref() {
                Some(")") => Ok(inner),
                _ => Err("condition: a ( without its )".into()),
            };
        }
        if t == "1" || t.eq_ignore_ascii_case("all") || t.eq_ignore_ascii_case("any") {
            match self.next() {
                Some(of) if of.eq_ignore_ascii_case("of") => {}
                _ => return Err(format!("condition: {t} must be followed by `of`")),
            }
            let target = self.next().ok_or("condition: `of` needs a selection name, a pattern or `them`")?;
            let chosen: Vec<&String> =
                self.selections.iter().filter(|(name, _)| target == "them" || glob(&target, name)).map(|(_, sql)| sql).collect();
            if chosen.is_empty() {
                return Err(format!("condition: no selection matches {target:?}"));
            }
            let joiner = if t.eq_ignore_ascii_case("all") { " AND " } else { " OR " };
            return Ok(format!("({})", chosen.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(joiner)));
        }
        self.selections
            .iter()
            .find(|(name, _)| *name == t)
            .map(|(_, sql)| sql.clone())
            .ok_or_else(|| format!("condition names {t:?}, which is not a selection"))
    }
}

/// `filter_*`-style names: `*` matches any run of characters.
fn glob(pattern: &str, name: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == name,
        Some((head, tail)) => name.starts_with(head) && name.len() >= head.len() + tail.len() && name.ends_with(tail),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(detection: &str) -> String {
        format!("title: t\nid: 0a1b2c3d-0000-4000-8000-000000000000\nlogsource:\n  product: kubernetes\n  service: audit\ndetection:\n{detection}\nlevel: high\n")
    }

    fn query(detection: &str) -> String {
        let (_, yaml) = convert(&rule(detection)).unwrap();
        let v: Value = serde_yaml::from_str(&yaml).unwrap();
        v["query"].as_str().unwrap().to_string()
    }

    #[test]
    fn selections_modifiers_and_conditions_become_sql() {
        let q = query("  sel:\n    verb: [create, update]\n    objectRef.resource: pods\n  filter_sys:\n    user.username|startswith: 'system:'\n  condition: sel and not 1 of filter_*");
        assert!(q.contains("(lower(verb) = 'create' OR lower(verb) = 'update')"), "{q}");
        assert!(q.contains("user_name ILIKE 'system:%'"), "{q}");
        assert!(q.contains("NOT coalesce("), "{q}");
        let q = query("  sel:\n    requestURI|contains|all: ['/exec', 'command=sh']\n  condition: sel");
        assert!(q.contains("request_uri ILIKE '%/exec%' ESCAPE '\\' AND request_uri ILIKE '%command=sh%'"), "{q}");
        let q = query("  sel:\n    hostPath: '*'\n    responseStatus.code|gte: 400\n  condition: all of them");
        assert!(q.contains("coalesce(array_length(host_path_mounts), 0) > 0") && q.contains("response_code >= 400"), "{q}");
        let q = query("  sel:\n    userAgent: 'kube_100%?'\n  condition: sel");
        assert!(q.contains("user_agent ILIKE 'kube\\_100\\%_'"), "{q}");
    }

    #[test]
    fn sigmahq_kubernetes_field_names_map_to_columns() {
        // SigmaHQ's short forms for the object's parts.
        let q = query("  sel:\n    verb: patch\n    apiGroup: apps\n    resource: deployments\n    subresource: scale\n    namespace: prod\n    name: web\n  condition: sel");
        for want in [
            "lower(api_group) = 'apps'",
            "lower(resource) = 'deployments'",
            "lower(subresource) = 'scale'",
            "lower(namespace) = 'prod'",
            "lower(name) = 'web'",
        ] {
            assert!(q.contains(want), "{want}: {q}");
        }
        // List columns: exact values without letters stay array_has; the rest match an element,
        // case-insensitively, with Sigma's wildcards inside one element.
        let q = query("  sel:\n    sourceIPs: 10.0.0.7\n    user.groups|startswith: 'system:'\n    capabilities: sys_admin\n    hostPath|endswith: '/docker.sock'\n  condition: sel");
        assert!(q.contains("array_has(source_ips, '10.0.0.7')"), "{q}");
        assert!(q.contains("regexp_like(array_to_string(user_groups, chr(10)), '(?im)^system:[^\\n]*$')"), "{q}");
        assert!(q.contains("regexp_like(array_to_string(added_capabilities, chr(10)), '(?im)^sys_admin$')"), "{q}");
        assert!(q.contains("regexp_like(array_to_string(host_path_mounts, chr(10)), '(?im)^[^\\n]*/docker\\.sock$')"), "{q}");
        let q = query("  sel:\n    capabilities|cased: SYS_ADMIN\n    verb|cased: create\n  condition: sel");
        assert!(q.contains("array_has(added_capabilities, 'SYS_ADMIN')") && q.contains("verb = 'create'"), "{q}");
        // The response code: numbers compare, patterns match its digits.
        let q = query("  sel:\n    responseStatus.code: [401, '403', '5*']\n    requestURI|re|i: '/EXEC'\n  condition: sel");
        assert!(q.contains("response_code = 401 OR response_code = 403 OR CAST(response_code AS VARCHAR) LIKE '5%'"), "{q}");
        assert!(q.contains("regexp_like(request_uri, '(?i)/EXEC')"), "{q}");
        let q = query("  sel:\n    annotations.authorization.k8s.io/decision: forbid\n    requestObject|contains: cluster-admin\n    objectRef.apiVersion: v1\n  condition: sel");
        assert!(q.contains("lower(authz_decision) = 'forbid'") && q.contains("request_object ILIKE '%cluster-admin%'"), "{q}");
        // rules/cloud/kubernetes writes the Event's apiVersion as the service.
        let text = rule("  sel:\n    verb: delete\n  condition: sel").replace("service: audit", "service: audit.k8s.io/v1")
            + "tags:\n  - attack.T1485\n";
        let (_, yaml) = convert(&text).unwrap();
        assert!(yaml.contains("- T1485"), "{yaml}");
    }

    #[test]
    fn every_mapped_column_is_a_kube_audit_column_of_its_kind() {
        use datafusion::arrow::datatypes::DataType;
        let schema = crate::tables::kube_audit_schema();
        for (field, column, kind) in FIELD_MAP {
            let f = schema.field_with_name(column).unwrap_or_else(|_| panic!("{field} -> {column}: no such column"));
            let ok = match kind {
                Kind::Text => f.data_type() == &DataType::Utf8,
                Kind::Number => f.data_type().is_integer(),
                Kind::List => matches!(f.data_type(), DataType::List(_)),
            };
            assert!(ok, "{field} -> {column}: {:?} is not {kind:?}", f.data_type());
        }
    }

    #[test]
    fn unsupported_constructs_are_named() {
        let cases = [
            ("  keywords:\n    - evil\n  condition: keywords", "keyword search"),
            ("  sel:\n    verb: list\n  condition: sel | count() by user.username > 5", "aggregation `| count() by user.username > 5`"),
            ("  sel:\n    file_path: '*gcc*'\n  condition: sel", "\"file_path\" has no kube_audit column"),
            ("  sel:\n    verb|base64offset|contains: x\n  condition: sel", "field verb: modifier |base64offset is not supported"),
            ("  sel:\n    verb|windash: x\n  condition: sel", "modifier |windash is not supported"),
            ("  sel:\n    sourceIPs|cidr: 10.0.0.0/8\n  condition: sel", "ip_in_list(source_ips"),
            ("  sel:\n    verb|contains|startswith: x\n  condition: sel", "modifier chain |contains|startswith"),
            ("  sel:\n    verb|i: x\n  condition: sel", "apply to |re only"),
            ("  sel:\n    verb|exists: maybe\n  condition: sel", "|exists takes true or false"),
            ("  sel:\n    requestURI|re: '(?<=exec)sh'\n  condition: sel", "not a Rust regular expression"),
            ("  sel:\n    user.groups|re: 'system:.*'\n  condition: sel", "|re over a list field"),
            ("  sel:\n    verb: [create, {a: b}]\n  condition: sel", "the value a map is not"),
            ("  sel:\n    responseStatus.code|gt: high\n  condition: sel", "|gt needs a number"),
            ("  sel:\n    apiVersion: v1\n  condition: sel", "the object's is objectRef.apiVersion"),
            ("  sel:\n    objectref.resource: pods\n  condition: sel", "did you mean objectRef.resource?"),
            ("  sel:\n    objectRef.uid: x\n  condition: sel", "objectRef's mapped parts"),
            (
                "  sel:\n    annotations.pod-security.kubernetes.io/enforce-policy: x\n  condition: sel",
                "only annotations.authorization.k8s.io/decision",
            ),
            ("  sel:\n    CommandLine|contains: whoami\n  condition: sel", "not processes or files"),
            (
                "  sel:\n    responseStatus.code: ALLOW\n  condition: sel",
                "selection sel: field responseStatus.code (response_code, a number): the value \"ALLOW\" can never match",
            ),
            ("  sel:\n    verb: list\n  timeframe: 5m\n  condition: sel", "timeframe"),
            ("  sel:\n    verb: list\n  condition: sel and other", "not a selection"),
            ("  sel:\n    verb: list\n  condition: (sel", "without its )"),
        ];
        for (detection, want) in cases {
            let err = convert(&rule(detection)).unwrap_err();
            assert!(err.contains(want), "{want:?} not in {err:?}");
        }
        let windows = "title: t\nid: x\nlogsource:\n  product: windows\n  category: process_creation\ndetection:\n  sel:\n    Image: x\n  condition: sel\n";
        assert!(convert(windows).unwrap_err().contains("only kubernetes audit"));
        assert!(convert("title: [unclosed").unwrap_err().contains("not valid YAML"));
    }

    #[test]
    fn metadata_maps_to_the_rule_format() {
        let text = rule("  sel:\n    verb: delete\n  condition: sel")
            + "tags:\n  - attack.defense-evasion\n  - attack.t1070\n  - attack.t1552.007\nreferences:\n  - https://microsoft.github.io/Threat-Matrix-for-Kubernetes/techniques/Delete%20K8S%20events/\nfalsepositives:\n  - Cleanup jobs\n";
        let (id, yaml) = convert(&text).unwrap();
        assert_eq!(id, "SIGMA-0a1b2c3d");
        let v: Value = serde_yaml::from_str(&yaml).unwrap();
        assert_eq!(v["severity"].as_str(), Some("high"));
        assert_eq!(v["mitre"], serde_yaml::from_str::<Value>("[T1070, T1552.007]").unwrap());
        assert_eq!(v["threat_matrix"][0].as_str(), Some("Defense evasion - Delete K8S events"));
        assert_eq!(v["tags"], serde_yaml::from_str::<Value>("[sigma, defense-evasion]").unwrap());
        assert_eq!(v["false_positives"].as_str(), Some("Cleanup jobs"));
    }
}
