//! Who is behind each workload: the last person or non-system identity that created, updated
//! or patched a workload object (a Deployment, DaemonSet, StatefulSet, Job, CronJob, or a pod
//! of its own). A pod is made by a controller (the ReplicaSet, DaemonSet or Job controller), so
//! an alert about the pod alone would name the controller; `workload_author(cluster,
//! namespace, workload)` names the identity that put the workload there, when Crowsnest saw it.
//!
//! Learned, like the clusters' egress (see [`super::egress`]), from each `kube_audit` batch
//! before any rule sees it; saved with the first-sighting state; bounded (the least recently
//! written are forgotten first).

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::Path;
use std::sync::{Arc, RwLock};

use anyhow::Result;
use datafusion::arrow::array::{Array, AsArray, RecordBatch, StringArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Int32Type};
use datafusion::common::{plan_err, Result as DfResult};
use datafusion::logical_expr::{ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility};
use serde::{Deserialize, Serialize};

use crate::rules::lists::Lists;

/// Workloads remembered at most (a few MB).
pub const MAX_WORKLOADS: usize = 100_000;

const STATE_FILE: &str = "workload-authors.json";

/// (cluster, namespace, workload).
type Key = (String, String, String);

#[derive(Serialize, Deserialize)]
struct Saved {
    cluster: String,
    namespace: String,
    workload: String,
    author: String,
}

#[derive(Debug, Default)]
struct Table {
    /// Key → (author, when it was last written, as a running count).
    authors: HashMap<Key, (String, u64)>,
    writes: u64,
}

#[derive(Debug, Default)]
pub struct WorkloadAuthors {
    table: RwLock<Table>,
    system_exact: Vec<String>,
    system_prefixes: Vec<String>,
}

impl WorkloadAuthors {
    /// Identities of `system_identities` and `system_identity_prefixes` are controllers and
    /// AKS components: they make pods, they are not who is behind a workload.
    pub fn new(lists: &Lists) -> WorkloadAuthors {
        let values = |name: &str| lists.get(name).map(|l| l.values.clone()).unwrap_or_default();
        WorkloadAuthors {
            system_exact: values("system_identities"),
            system_prefixes: values("system_identity_prefixes"),
            ..Default::default()
        }
    }

    fn is_system(&self, user: &str) -> bool {
        self.system_exact.iter().any(|s| s == user) || self.system_prefixes.iter().any(|p| user.starts_with(p.as_str()))
    }

    /// Learns from one `kube_audit` batch.
    pub fn learn(&self, batch: &RecordBatch) {
        let col = |name: &str| batch.column_by_name(name).map(|c| c.as_string::<i32>().clone());
        let (Some(users), Some(verbs), Some(workloads), Some(namespaces), Some(subresources)) =
            (col("user_name"), col("verb"), col("workload"), col("namespace"), col("subresource"))
        else {
            return;
        };
        let clusters = col("cluster");
        let codes = batch.column_by_name("response_code").map(|c| c.as_primitive::<Int32Type>().clone());
        let mut learned = Vec::new();
        for row in 0..batch.num_rows() {
            if workloads.is_null(row) || users.is_null(row) || subresources.is_valid(row) {
                continue;
            }
            if !matches!(verbs.is_valid(row).then(|| verbs.value(row)), Some("create" | "update" | "patch")) {
                continue;
            }
            if codes.as_ref().is_none_or(|c| c.is_null(row) || c.value(row) >= 400) || self.is_system(users.value(row)) {
                continue;
            }
            let text = |a: &StringArray| if a.is_valid(row) { a.value(row).to_string() } else { String::new() };
            let cluster = clusters.as_ref().map(text).unwrap_or_default();
            learned.push(((cluster, text(&namespaces), workloads.value(row).to_string()), users.value(row).to_string()));
        }
        if learned.is_empty() {
            return;
        }
        let mut t = self.table.write().expect("authors lock");
        for (key, author) in learned {
            t.writes += 1;
            let stamp = t.writes;
            t.authors.insert(key, (author, stamp));
        }
        if t.authors.len() > MAX_WORKLOADS {
            // Forget the least recently written half: amortized, one pass per MAX_WORKLOADS/2 writes.
            let keep_after = t.writes - (MAX_WORKLOADS / 2) as u64;
            t.authors.retain(|_, (_, stamp)| *stamp > keep_after);
        }
    }

    pub fn author(&self, cluster: &str, namespace: &str, workload: &str) -> Option<String> {
        let key = (cluster.to_string(), namespace.to_string(), workload.to_string());
        self.table.read().expect("authors lock").authors.get(&key).map(|(a, _)| a.clone())
    }

    pub fn len(&self) -> usize {
        self.table.read().expect("authors lock").authors.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn save(&self, dir: &Path) -> Result<()> {
        let t = self.table.read().expect("authors lock");
        let mut rows: Vec<(&Key, &(String, u64))> = t.authors.iter().collect();
        rows.sort_by_key(|(_, (_, stamp))| *stamp);
        let saved: Vec<Saved> = rows
            .into_iter()
            .map(|((cluster, namespace, workload), (author, _))| Saved {
                cluster: cluster.clone(),
                namespace: namespace.clone(),
                workload: workload.clone(),
                author: author.clone(),
            })
            .collect();
        super::state_file::write(&dir.join(STATE_FILE), &saved)
    }

    pub fn load(&self, dir: &Path) -> Result<()> {
        let Some(saved) = super::state_file::read::<Vec<Saved>>(&dir.join(STATE_FILE), "workload authors")? else {
            return Ok(());
        };
        let mut t = self.table.write().expect("authors lock");
        for s in saved {
            t.writes += 1;
            let stamp = t.writes;
            t.authors.insert((s.cluster, s.namespace, s.workload), (s.author, stamp));
        }
        Ok(())
    }
}

/// `workload_author(cluster, namespace, workload)`: who is behind the workload (see the module
/// documentation); NULL when Crowsnest did not see it written by a person or non-system identity.
#[derive(Debug)]
pub struct WorkloadAuthorFn {
    authors: Arc<WorkloadAuthors>,
    signature: Signature,
}

impl WorkloadAuthorFn {
    pub fn udf(authors: Arc<WorkloadAuthors>) -> ScalarUDF {
        ScalarUDF::new_from_impl(WorkloadAuthorFn { authors, signature: Signature::any(3, Volatility::Volatile) })
    }
}

impl PartialEq for WorkloadAuthorFn {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.authors, &other.authors)
    }
}
impl Eq for WorkloadAuthorFn {}
impl Hash for WorkloadAuthorFn {
    fn hash<H: Hasher>(&self, state: &mut H) {
        "workload_author".hash(state)
    }
}

impl ScalarUDFImpl for WorkloadAuthorFn {
    fn name(&self) -> &str {
        "workload_author"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, args: &[DataType]) -> DfResult<DataType> {
        let text = |t: &DataType| matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Null);
        if args.len() == 3 && args.iter().all(text) {
            Ok(DataType::Utf8)
        } else {
            plan_err!("workload_author(cluster, namespace, workload) takes three strings, got {args:?}")
        }
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let n = args.number_rows;
        let mut columns = Vec::with_capacity(3);
        for a in &args.args {
            let arr = a.to_array(n)?;
            columns.push(if arr.data_type() == &DataType::Utf8 { arr } else { cast(&arr, &DataType::Utf8)? });
        }
        let [c, ns, w] = [0, 1, 2].map(|i| columns[i].as_string::<i32>());
        fn text(a: &StringArray, i: usize) -> &str {
            if a.is_valid(i) {
                a.value(i)
            } else {
                ""
            }
        }
        let t = self.authors.table.read().expect("authors lock");
        let mut key: Key = Default::default();
        let out: StringArray = (0..n)
            .map(|i| {
                if w.is_null(i) {
                    return None;
                }
                key.0.clear();
                key.0.push_str(text(c, i));
                key.1.clear();
                key.1.push_str(text(ns, i));
                key.2.clear();
                key.2.push_str(w.value(i));
                t.authors.get(&key).map(|(a, _)| a.clone())
            })
            .collect();
        Ok(ColumnarValue::Array(Arc::new(out)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::{Decoder, Origin};

    fn lists() -> Lists {
        let text =
            |name: &str, values: &str| (format!("{name}.yaml").into(), format!("name: {name}\ndescription: t\nvalues: [{values}]\n"));
        Lists::from_texts(vec![
            text("system_identities", "aksService"),
            text("system_identity_prefixes", "'system:serviceaccount:kube-system:'"),
        ])
        .unwrap()
    }

    /// A Deployment `name` in `ns` written by `user` with `verb`, answered with `code`.
    fn deployment(user: &str, verb: &str, ns: &str, name: &str, code: i32) -> String {
        let ev = serde_json::json!({"kind": "Event", "auditID": format!("{user}-{name}-{verb}"), "stage": "ResponseComplete", "verb": verb,
            "user": {"username": user}, "objectRef": {"resource": "deployments", "namespace": ns, "name": name, "apiGroup": "apps"},
            "responseStatus": {"code": code}, "requestReceivedTimestamp": "2026-11-01T08:00:00Z",
            "requestObject": {"kind": "Deployment", "spec": {"template": {"spec": {"containers": [{"image": "x"}]}}}}});
        serde_json::json!({"records": [{"category": "kube-audit", "resourceId": "/C", "properties": {"log": ev.to_string()}}]}).to_string()
    }

    fn learn(authors: &WorkloadAuthors, lines: &[String]) {
        let mut d = Decoder::new();
        for (i, l) in lines.iter().enumerate() {
            d.decode(Origin { source: "t", unit: "line", index: i as u64 }, l.as_bytes());
        }
        assert!(d.dead_letters.is_empty());
        authors.learn(&d.finish_audit().unwrap());
    }

    #[test]
    fn the_last_non_system_writer_is_the_author_and_survives_a_restart() {
        let authors = WorkloadAuthors::new(&lists());
        learn(
            &authors,
            &[
                deployment("mallory@contoso.com", "create", "web", "agent", 201),
                deployment("system:serviceaccount:kube-system:deployment-controller", "update", "web", "agent", 200),
                deployment("bob@contoso.com", "patch", "web", "api", 200),
                deployment("eve@contoso.com", "patch", "web", "api", 403),
                deployment("aksService", "create", "kube-system", "coredns", 201),
            ],
        );
        assert_eq!(authors.author("/C", "web", "Deployment/agent").as_deref(), Some("mallory@contoso.com"));
        assert_eq!(authors.author("/C", "web", "Deployment/api").as_deref(), Some("bob@contoso.com"));
        assert_eq!(authors.author("/C", "kube-system", "Deployment/coredns"), None);
        assert_eq!(authors.author("/D", "web", "Deployment/agent"), None, "per cluster");
        let dir = tempfile::tempdir().unwrap();
        authors.save(dir.path()).unwrap();
        let restarted = WorkloadAuthors::new(&lists());
        restarted.load(dir.path()).unwrap();
        assert_eq!(restarted.author("/C", "web", "Deployment/api").as_deref(), Some("bob@contoso.com"));
        assert_eq!(restarted.len(), 2);
    }
}
