//! Removes secret material from audit request/response bodies before anything stores or
//! forwards them: Secret `data`/`stringData` values (and the last-applied-configuration
//! annotation that repeats them), TokenRequest and TokenReview tokens.
//!
//! Keys stay visible (a hunt may need to know *which* key was read); values become
//! [`REDACTED`]. A body that should be redacted but cannot be parsed is replaced whole: when in
//! doubt, drop it rather than leak it.

use serde_json::Value;

pub const REDACTED: &str = "**REDACTED**";
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Whether a body of this resource could carry secret material worth a full parse.
/// Cheap substring checks keep the common case (pods, leases…) free of any extra work.
fn may_hold_secret(resource: Option<&str>, body: &str) -> bool {
    matches!(resource, Some("secrets") | Some("tokenreviews"))
        || body.contains("\"Secret\"")
        || body.contains("\"SecretList\"")
        || body.contains("\"TokenRequest\"")
        || body.contains("\"TokenReview\"")
}

/// Returns the redacted body, or None when it needs no change.
pub fn redact_body(resource: Option<&str>, body: &str) -> Option<String> {
    if !may_hold_secret(resource, body) {
        return None;
    }
    let mut v: Value = match serde_json::from_str(body) {
        Ok(v) => v,
        Err(_) => return Some(format!("\"{REDACTED} (unparseable body of a secret-bearing resource)\"")),
    };
    // A patch or update of a secret may carry no `kind`: treat the top object as a Secret.
    let top_is_secret = resource == Some("secrets");
    let changed = redact_value(&mut v, top_is_secret);
    changed.then(|| v.to_string())
}

fn redact_value(v: &mut Value, assume_secret: bool) -> bool {
    match v {
        Value::Object(map) => {
            let kind = map.get("kind").and_then(Value::as_str).map(str::to_string);
            let mut changed = false;
            let is_secret = kind.as_deref() == Some("Secret") || (assume_secret && kind.is_none());
            if is_secret {
                for key in ["data", "stringData"] {
                    if let Some(Value::Object(d)) = map.get_mut(key) {
                        for val in d.values_mut() {
                            *val = Value::String(REDACTED.into());
                            changed = true;
                        }
                    }
                }
                if let Some(Value::Object(ann)) = map.get_mut("metadata").and_then(|m| m.get_mut("annotations")) {
                    if let Some(a) = ann.get_mut(LAST_APPLIED) {
                        *a = Value::String(REDACTED.into());
                        changed = true;
                    }
                }
            }
            match kind.as_deref() {
                Some("TokenRequest") => changed |= redact_path(map, &["status", "token"]),
                Some("TokenReview") => changed |= redact_path(map, &["spec", "token"]),
                _ => {}
            }
            let items_are_secrets =
                kind.as_deref() == Some("SecretList") || (assume_secret && kind.as_deref().is_some_and(|k| k.ends_with("List")));
            for (key, child) in map.iter_mut() {
                if key == "data" || key == "stringData" {
                    continue;
                }
                changed |= redact_value(child, items_are_secrets && key == "items");
            }
            changed
        }
        Value::Array(items) => items.iter_mut().fold(false, |acc, i| redact_value(i, assume_secret) | acc),
        _ => false,
    }
}

fn redact_path(map: &mut serde_json::Map<String, Value>, path: &[&str]) -> bool {
    let (last, parents) = path.split_last().expect("non-empty path");
    let mut cur = map;
    for p in parents {
        match cur.get_mut(*p) {
            Some(Value::Object(m)) => cur = m,
            _ => return false,
        }
    }
    match cur.get_mut(*last) {
        Some(v) if v.is_string() => {
            *v = Value::String(REDACTED.into());
            true
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_values_and_last_applied_are_removed() {
        let body = r#"{"kind":"Secret","apiVersion":"v1","metadata":{"name":"db","annotations":{"kubectl.kubernetes.io/last-applied-configuration":"{\"data\":{\"password\":\"aHVudGVyMg==\"}}"}},"data":{"password":"aHVudGVyMg=="},"stringData":{"user":"admin"}}"#;
        let out = redact_body(Some("secrets"), body).unwrap();
        assert!(!out.contains("aHVudGVyMg") && !out.contains("admin"), "{out}");
        assert!(out.contains("\"password\"") && out.contains(REDACTED));
    }

    #[test]
    fn patches_and_lists_of_secrets() {
        let patch = r#"{"data":{"token":"c2VjcmV0"}}"#;
        assert!(!redact_body(Some("secrets"), patch).unwrap().contains("c2VjcmV0"));
        let list = r#"{"kind":"SecretList","items":[{"metadata":{"name":"a"},"data":{"k":"djE="}},{"kind":"Secret","data":{"k":"djI="}}]}"#;
        let out = redact_body(Some("secrets"), list).unwrap();
        assert!(!out.contains("djE=") && !out.contains("djI="), "{out}");
    }

    #[test]
    fn tokens_are_removed() {
        let tr = r#"{"kind":"TokenRequest","apiVersion":"authentication.k8s.io/v1","status":{"token":"eyJhbGciOi.x.y","expirationTimestamp":"2026-11-01T09:00:00Z"}}"#;
        let out = redact_body(Some("serviceaccounts"), tr).unwrap();
        assert!(!out.contains("eyJhbGciOi") && out.contains("expirationTimestamp"));
        let rv = r#"{"kind":"TokenReview","spec":{"token":"abc.def.ghi"}}"#;
        assert!(!redact_body(Some("tokenreviews"), rv).unwrap().contains("abc.def"));
    }

    #[test]
    fn unrelated_bodies_untouched_and_unparseable_secrets_dropped() {
        assert_eq!(redact_body(Some("pods"), r#"{"kind":"Pod","spec":{}}"#), None);
        let out = redact_body(Some("secrets"), r#"{"data":{"k":"djE="#).unwrap();
        assert!(!out.contains("djE="));
        // A pod that merely references a secret by name keeps its body.
        assert_eq!(redact_body(Some("pods"), r#"{"kind":"Pod","spec":{"volumes":[{"secret":{"secretName":"x"}}]}}"#), None);
    }
}
