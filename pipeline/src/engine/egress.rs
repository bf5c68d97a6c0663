//! A cluster's own egress, learned: the source addresses its node identities reach the API
//! server from. On an AKS cluster with a public API server every kubelet, `nodeclient` and the
//! pods on the nodes come through the cluster's outbound public IPs (load balancer, NAT gateway
//! or firewall), all day. Those addresses are nobody's list entry, so a rule that checks source
//! addresses (CN-AUDIT-047) would alarm on the cluster itself.
//!
//! The engine learns them from each `kube_audit` batch before any rule sees it: a successful
//! request by an identity of the `cluster_egress_identities` list (prefixes; node certificates
//! by default, which an outsider cannot use from elsewhere without also tripping other rules)
//! teaches its source address for its cluster. Rules ask `cluster_egress(cluster, source_ip)`.
//! What was learned is saved with the first-sighting state, so a restart keeps it, and counted
//! in `crowsnest_cluster_egress_addresses{cluster}`.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, RwLock};

use anyhow::Result;
use datafusion::arrow::array::{Array, ArrayRef, AsArray, BooleanArray, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Int32Type};
use datafusion::common::{plan_err, Result as DfResult};
use datafusion::logical_expr::{ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility};

use crate::rules::lists::Lists;

/// The list of identity prefixes whose requests teach their source address.
pub const TEACHERS_LIST: &str = "cluster_egress_identities";

/// At most this many addresses per cluster: AKS allows 16 outbound IPs per load balancer or NAT
/// gateway. Past it, learning stops for that cluster (and says so): an identity on the list
/// calling from everywhere is itself worth a look.
pub const MAX_ADDRESSES_PER_CLUSTER: usize = 64;

/// The state file in the state directory.
const STATE_FILE: &str = "cluster-egress.json";

#[derive(Debug, Default)]
pub struct ClusterEgress {
    /// Cluster (ARM id; "" for events without an envelope) → addresses.
    learned: RwLock<BTreeMap<String, BTreeSet<IpAddr>>>,
    teachers: Vec<String>,
    warned_full: std::sync::atomic::AtomicBool,
}

impl ClusterEgress {
    /// Learns from the identities of `lists`' `cluster_egress_identities` (none without it).
    pub fn new(lists: &Lists) -> ClusterEgress {
        let teachers = lists.get(TEACHERS_LIST).map(|l| l.values.clone()).unwrap_or_default();
        ClusterEgress { teachers, ..ClusterEgress::default() }
    }

    fn is_teacher(&self, user: &str) -> bool {
        self.teachers.iter().any(|p| user.starts_with(p.as_str()))
    }

    /// Learns from one `kube_audit` batch (any batch without the columns teaches nothing).
    pub fn learn(&self, batch: &RecordBatch) {
        if self.teachers.is_empty() {
            return;
        }
        let col = |name: &str| batch.column_by_name(name).map(|c| c.as_string::<i32>().clone());
        let (Some(users), Some(ips)) = (col("user_name"), col("source_ip")) else { return };
        let clusters = col("cluster");
        let codes = batch.column_by_name("response_code").map(|c| c.as_primitive::<Int32Type>().clone());
        let mut new: Vec<(String, IpAddr)> = Vec::new();
        // One read lock for the batch: kubelets are most of the traffic, nearly all known.
        let known = self.learned.read().expect("egress lock");
        for row in 0..batch.num_rows() {
            if users.is_null(row) || ips.is_null(row) || !self.is_teacher(users.value(row)) {
                continue;
            }
            // Only a request the API server accepted proves the identity.
            if codes.as_ref().is_none_or(|c| c.is_null(row) || c.value(row) >= 400) {
                continue;
            }
            let Ok(ip) = ips.value(row).trim().parse::<IpAddr>() else { continue };
            let cluster = clusters.as_ref().filter(|c| c.is_valid(row)).map_or("", |c| c.value(row));
            if !known.get(cluster).is_some_and(|s| s.contains(&ip)) && !new.iter().any(|(c, i)| c == cluster && *i == ip) {
                new.push((cluster.to_string(), ip));
            }
        }
        drop(known);
        if new.is_empty() {
            return;
        }
        let mut learned = self.learned.write().expect("egress lock");
        for (cluster, ip) in new {
            let set = learned.entry(cluster.clone()).or_default();
            if set.len() >= MAX_ADDRESSES_PER_CLUSTER {
                if !self.warned_full.swap(true, std::sync::atomic::Ordering::Relaxed) {
                    log::warn!(
                        "cluster {cluster:?}: node identities called from more than {MAX_ADDRESSES_PER_CLUSTER} addresses; no more are learned as its egress (new ones stay unauthorized)"
                    );
                }
                continue;
            }
            log::info!("cluster {cluster:?}: {ip} learned as the cluster's own egress address");
            set.insert(ip);
        }
    }

    /// The learned addresses, by cluster.
    pub fn snapshot(&self) -> BTreeMap<String, BTreeSet<IpAddr>> {
        self.learned.read().expect("egress lock").clone()
    }

    pub fn save(&self, dir: &Path) -> Result<()> {
        super::state_file::write(&dir.join(STATE_FILE), &self.snapshot())
    }

    pub fn load(&self, dir: &Path) -> Result<()> {
        let Some(saved) = super::state_file::read::<BTreeMap<String, BTreeSet<IpAddr>>>(&dir.join(STATE_FILE), "cluster egress")? else {
            return Ok(());
        };
        let mut learned = self.learned.write().expect("egress lock");
        for (cluster, ips) in saved {
            learned.entry(cluster).or_default().extend(ips);
        }
        Ok(())
    }
}

/// `cluster_egress(cluster, source_ip)`: true when the address was learned as the cluster's own
/// egress (see the module documentation).
#[derive(Debug)]
pub struct ClusterEgressFn {
    egress: Arc<ClusterEgress>,
    signature: Signature,
}

impl ClusterEgressFn {
    pub fn udf(egress: Arc<ClusterEgress>) -> ScalarUDF {
        ScalarUDF::new_from_impl(ClusterEgressFn { egress, signature: Signature::any(2, Volatility::Volatile) })
    }
}

impl PartialEq for ClusterEgressFn {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.egress, &other.egress)
    }
}
impl Eq for ClusterEgressFn {}
impl Hash for ClusterEgressFn {
    fn hash<H: Hasher>(&self, state: &mut H) {
        "cluster_egress".hash(state)
    }
}

fn strings(arr: ArrayRef) -> DfResult<ArrayRef> {
    Ok(if arr.data_type() == &DataType::Utf8 { arr } else { cast(&arr, &DataType::Utf8)? })
}

impl ScalarUDFImpl for ClusterEgressFn {
    fn name(&self) -> &str {
        "cluster_egress"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, args: &[DataType]) -> DfResult<DataType> {
        let text = |t: &DataType| matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Null);
        match args {
            [a, b] if text(a) && text(b) => Ok(DataType::Boolean),
            _ => plan_err!("cluster_egress(cluster, source_ip) takes two strings, got {args:?}"),
        }
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let n = args.number_rows;
        let clusters = strings(args.args[0].to_array(n)?)?;
        let ips = strings(args.args[1].to_array(n)?)?;
        let (clusters, ips) = (clusters.as_string::<i32>(), ips.as_string::<i32>());
        let learned = self.egress.learned.read().expect("egress lock");
        let out: Vec<bool> = (0..n)
            .map(|i| {
                let cluster = if clusters.is_valid(i) { clusters.value(i) } else { "" };
                ips.is_valid(i)
                    && learned.get(cluster).is_some_and(|set| ips.value(i).trim().parse::<IpAddr>().is_ok_and(|ip| set.contains(&ip)))
            })
            .collect();
        Ok(ColumnarValue::Array(Arc::new(BooleanArray::from(out))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::{Decoder, Origin};

    fn lists() -> Lists {
        let text = "name: cluster_egress_identities\ndescription: t\nvalues: ['system:node:', nodeclient]\n".to_string();
        Lists::from_texts(vec![("l.yaml".into(), text)]).unwrap()
    }

    /// One envelope line: `user` calling from `ip` in `cluster`, answered with `code`.
    fn batch(rows: &[(&str, &str, &str, i32)]) -> RecordBatch {
        let mut d = Decoder::new();
        for (i, (cluster, user, ip, code)) in rows.iter().enumerate() {
            let ev = serde_json::json!({"kind": "Event", "auditID": format!("a-{i}"), "stage": "ResponseComplete", "verb": "get",
                "user": {"username": user}, "sourceIPs": [ip], "responseStatus": {"code": code},
                "requestReceivedTimestamp": "2026-11-01T08:00:00Z"});
            let line =
                serde_json::json!({"records": [{"category": "kube-audit", "resourceId": cluster, "properties": {"log": ev.to_string()}}]});
            d.decode(Origin { source: "t", unit: "line", index: i as u64 }, line.to_string().as_bytes());
        }
        assert!(d.dead_letters.is_empty());
        d.finish_audit().unwrap()
    }

    #[test]
    fn learns_per_cluster_from_accepted_node_requests_only_and_keeps_it_across_restarts() {
        let egress = ClusterEgress::new(&lists());
        egress.learn(&batch(&[
            ("/A", "system:node:vmss000000", "20.61.123.45", 200),
            ("/A", "nodeclient", "20.61.123.46", 201),
            ("/A", "system:node:vmss000001", "198.51.100.9", 403),
            ("/A", "system:serviceaccount:kube-system:coredns", "203.0.113.5", 200),
            ("/B", "system:node:vmss000000", "52.1.2.3", 200),
        ]));
        let learned = egress.snapshot();
        let a: Vec<String> = learned["/A"].iter().map(|ip| ip.to_string()).collect();
        assert_eq!(a, ["20.61.123.45", "20.61.123.46"]);
        assert_eq!(learned["/B"].len(), 1);
        let ip: IpAddr = "20.61.123.45".parse().unwrap();
        assert!(learned["/A"].contains(&ip) && !learned["/B"].contains(&ip));

        let dir = tempfile::tempdir().unwrap();
        egress.save(dir.path()).unwrap();
        let restarted = ClusterEgress::new(&lists());
        restarted.load(dir.path()).unwrap();
        assert_eq!(restarted.snapshot(), learned);
    }

    #[test]
    fn stops_learning_past_the_cap() {
        let egress = ClusterEgress::new(&lists());
        let ips: Vec<String> = (0..MAX_ADDRESSES_PER_CLUSTER + 10).map(|i| format!("20.61.{}.{}", i / 200, i % 200)).collect();
        let rows: Vec<(&str, &str, &str, i32)> = ips.iter().map(|ip| ("/A", "system:node:x", ip.as_str(), 200)).collect();
        egress.learn(&batch(&rows));
        assert_eq!(egress.snapshot()["/A"].len(), MAX_ADDRESSES_PER_CLUSTER);
    }

    #[test]
    fn nothing_is_learned_without_the_list() {
        let egress = ClusterEgress::new(&Lists::default());
        egress.learn(&batch(&[("/A", "system:node:vmss000000", "20.61.123.45", 200)]));
        assert!(egress.snapshot().is_empty());
    }
}
