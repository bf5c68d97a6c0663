//! `crowsnest rules import-sigma`: Sigma rules for Kubernetes audit logs (SigmaHQ's
//! rules/application/kubernetes) into Crowsnest rules, one file each, that run unchanged.
//!
//! Supported: `logsource: {product: kubernetes, service: audit}`; selections as maps (fields
//! ANDed) or lists of maps (ORed); value lists (ORed, or ANDed with `|all`); `*` and `?`
//! wildcards; the modifiers `contains`, `startswith`, `endswith`, `all`, `re`, `exists`, `gt`,
//! `gte`, `lt`, `lte`; conditions with `and`, `or`, `not`, parentheses, `1 of X*`, `all of X*`,
//! `1 of them`, `all of them`. Matching is case-insensitive, as in Sigma (except `re`).
//! Anything else — keyword selections, aggregations (`| count()`), `timeframe`, correlations,
//! fields with no Kubernetes audit column, other modifiers — makes that rule fail with a
//! message naming the construct; the other rules still convert.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_yaml::Value;

use super::catalog::THREAT_MATRIX;

/// Sigma field → kube_audit column, and whether the column is a list of strings.
pub const FIELD_MAP: &[(&str, &str, Kind)] = &[
    ("verb", "verb", Kind::Text),
    ("objectRef.resource", "resource", Kind::Text),
    ("objectRef.subresource", "subresource", Kind::Text),
    ("objectRef.namespace", "namespace", Kind::Text),
    ("objectRef.name", "name", Kind::Text),
    ("objectRef.apiGroup", "api_group", Kind::Text),
    ("objectRef.apiVersion", "api_version", Kind::Text),
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
    if product != Some("kubernetes") || service != Some("audit") {
        return Err(format!(
            "logsource is product: {}, service: {} — only kubernetes audit rules convert",
            product.unwrap_or("(none)"),
            service.unwrap_or("(none)")
        ));
    }
    let detection = doc.get("detection").and_then(Value::as_mapping).ok_or("no detection block")?;
    if detection.contains_key("timeframe") {
        return Err("timeframe (an aggregation over time) is not supported; write a windowed rule (GROUP BY … TUMBLE)".into());
    }
    let mut selections = Vec::new();
    for (k, v) in detection {
        let name = k.as_str().ok_or("a detection key that is not a string")?;
        if name != "condition" {
            selections.push((name.to_string(), selection_sql(name, v)?));
        }
    }
    let condition = match detection.get("condition") {
        Some(Value::String(c)) => c.clone(),
        Some(Value::Sequence(cs)) => {
            let cs: Vec<&str> = cs.iter().filter_map(Value::as_str).collect();
            cs.iter().map(|c| format!("({c})")).collect::<Vec<_>>().join(" or ")
        }
        _ => return Err("no condition".into()),
    };
    if condition.contains('|') {
        return Err(format!("aggregation in the condition ({condition:?}) is not supported; write a windowed rule"));
    }
    let predicate = Condition::parse(&condition, &selections)?;

    let tags: Vec<String> =
        doc.get("tags").and_then(Value::as_sequence).into_iter().flatten().filter_map(Value::as_str).map(str::to_string).collect();
    let mitre: Vec<String> = tags
        .iter()
        .filter_map(|t| t.strip_prefix("attack.t"))
        .filter(|t| t.chars().next().is_some_and(|c| c.is_ascii_digit()))
        .map(|t| format!("T{}", t.to_ascii_uppercase()))
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

fn field_sql(key: &str, vals: &Value) -> Result<String, String> {
    let mut parts = key.split('|');
    let field = parts.next().unwrap_or_default();
    let modifiers: Vec<&str> = parts.collect();
    let &(_, column, kind) = FIELD_MAP
        .iter()
        .find(|(f, _, _)| *f == field)
        .ok_or_else(|| format!("field {field:?} has no kube_audit column (see the field mapping in detections/README.md)"))?;
    let all = modifiers.contains(&"all");
    let op = match modifiers.iter().filter(|m| **m != "all").collect::<Vec<_>>().as_slice() {
        [] => "eq",
        [m] => match **m {
            "contains" | "startswith" | "endswith" | "re" | "exists" | "gt" | "gte" | "lt" | "lte" => **m,
            other => return Err(format!("modifier {other:?} is not supported")),
        },
        more => return Err(format!("modifier chain {more:?} is not supported")),
    };
    let values: Vec<&Value> = match vals {
        Value::Sequence(vs) => vs.iter().collect(),
        v => vec![v],
    };
    if values.is_empty() {
        return Err(format!("{field}: an empty list of values"));
    }
    let conds: Vec<String> = values.iter().map(|v| value_sql(field, column, kind, op, v)).collect::<Result<_, _>>()?;
    Ok(format!("({})", conds.join(if all { " AND " } else { " OR " })))
}

fn value_sql(field: &str, column: &str, kind: Kind, op: &str, v: &Value) -> Result<String, String> {
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
        Value::Bool(b) if op == "exists" => {
            let exists =
                if kind == Kind::List { format!("coalesce(array_length({column}), 0) > 0") } else { format!("{column} IS NOT NULL") };
            return Ok(if *b { exists } else { format!("NOT ({exists})") });
        }
        Value::Bool(b) => b.to_string(),
        _ => return Err(format!("{field}: a value that is not a string, number or null")),
    };
    if kind == Kind::Number {
        let n: i64 = text.trim().parse().map_err(|_| format!("{field} is a number; {text:?} can never match it"))?;
        let sql_op = match op {
            "eq" => "=",
            "gt" => ">",
            "gte" => ">=",
            "lt" => "<",
            "lte" => "<=",
            other => return Err(format!("{field}: modifier {other} does not apply to a number")),
        };
        return Ok(format!("{column} {sql_op} {n}"));
    }
    if matches!(op, "gt" | "gte" | "lt" | "lte") {
        return Err(format!("{field}: modifier {op} applies to numbers only"));
    }
    if op == "re" {
        if kind == Kind::List {
            return Err(format!("{field}|re: regular expressions over a list field are not supported"));
        }
        return Ok(format!("regexp_like({column}, {})", quote(&text)));
    }
    let pattern = match op {
        "contains" => format!("*{}*", text),
        "startswith" => format!("{text}*"),
        "endswith" => format!("*{text}"),
        _ => text.clone(),
    };
    // Values containing the modifier's own wildcards keep Sigma's meaning: * and ? anywhere.
    let wildcard = has_wildcard(&pattern);
    if kind == Kind::List {
        return match op {
            "eq" if pattern == "*" => Ok(format!("coalesce(array_length({column}), 0) > 0")),
            "eq" if !wildcard => Ok(format!("array_has({column}, {})", quote(&unescape(&pattern)))),
            // Some element contains the text: the elements joined by newlines contain it.
            "contains" if !has_wildcard(&text) => {
                Ok(format!("array_to_string({column}, chr(10)) ILIKE {} ESCAPE '\\'", quote(&like_pattern(&pattern))))
            }
            _ => Err(format!("{field}: on a list field only exact values, '*' and |contains (without wildcards) are supported")),
        };
    }
    if wildcard {
        Ok(format!("{column} ILIKE {} ESCAPE '\\'", quote(&like_pattern(&pattern))))
    } else {
        Ok(format!("lower({column}) = {}", quote(&unescape(&pattern).to_lowercase())))
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
    fn unsupported_constructs_are_named() {
        let cases = [
            ("  keywords:\n    - evil\n  condition: keywords", "keyword search"),
            ("  sel:\n    verb: list\n  condition: sel | count() by user.username > 5", "aggregation"),
            ("  sel:\n    file_path: '*gcc*'\n  condition: sel", "\"file_path\" has no kube_audit column"),
            ("  sel:\n    verb|base64offset|contains: x\n  condition: sel", "modifier chain"),
            ("  sel:\n    verb|windash: x\n  condition: sel", "modifier \"windash\""),
            ("  sel:\n    responseStatus.code: ALLOW\n  condition: sel", "can never match"),
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
