//! The Azure side of the Sentinel sink (deploy/sentinel/) against the sink's own row definition:
//! the table, the DCR's stream declaration and `row::COLUMNS` must be the same columns in the same
//! order with the same types, every name must be one Log Analytics accepts, and the analytics rule
//! may only name columns that exist. A column added to one place and not the others fails here,
//! not as a 400 from the Logs Ingestion API or a rule that silently maps nothing.

use serde_json::Value;

use crowsnest::sink::sentinel::row::COLUMNS;

use crate::common::repo_root;

const TABLE: &str = "Crowsnest_Alerts_CL";
const STREAM: &str = "Custom-CrowsnestAlert";
/// Monitoring Metrics Publisher: the built-in role that may post to a DCR.
const MONITORING_METRICS_PUBLISHER: &str = "3913510d-42f4-4e42-8a64-420c390055eb";
/// Column names Log Analytics reserves (besides any name beginning with `_`).
const RESERVED: &[&str] = &["id", "Type", "TenantId", "_ResourceId", "Title", "UniqueId", "_SubscriptionId"];
/// The types a DCR stream declaration accepts.
const STREAM_TYPES: &[&str] = &["string", "int", "long", "real", "boolean", "dynamic", "datetime"];
/// The tactic names Sentinel accepts (its AttackTactic enum, Enterprise matrix).
const SENTINEL_TACTICS: &[&str] = &[
    "Reconnaissance",
    "ResourceDevelopment",
    "InitialAccess",
    "Execution",
    "Persistence",
    "PrivilegeEscalation",
    "DefenseEvasion",
    "CredentialAccess",
    "Discovery",
    "LateralMovement",
    "Collection",
    "CommandAndControl",
    "Exfiltration",
    "Impact",
];

fn template(name: &str) -> Value {
    let path = repo_root().join("deploy/sentinel").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

/// The one resource of this type in the template.
fn resource<'a>(template: &'a Value, kind: &str) -> &'a Value {
    let found: Vec<&Value> = template["resources"].as_array().expect("resources").iter().filter(|r| r["type"] == kind).collect();
    assert_eq!(found.len(), 1, "expected one {kind} resource");
    found[0]
}

fn columns(list: &Value, what: &str) -> Vec<(String, String)> {
    list.as_array()
        .unwrap_or_else(|| panic!("{what}: no column list"))
        .iter()
        .map(|c| {
            let name = c["name"].as_str().unwrap_or_else(|| panic!("{what}: a column without a name: {c}"));
            let ty = c["type"].as_str().unwrap_or_else(|| panic!("{what}: {name} has no type"));
            (name.to_string(), ty.to_string())
        })
        .collect()
}

fn declared() -> Vec<(String, String)> {
    COLUMNS.iter().map(|(n, t)| (n.to_string(), t.to_string())).collect()
}

#[test]
fn table_stream_and_sink_rows_have_the_same_columns() {
    let t = template("crowsnest-sentinel.json");
    let table = resource(&t, "Microsoft.OperationalInsights/workspaces/tables");
    assert!(table["name"].as_str().unwrap().contains(TABLE), "the table resource is {TABLE}");
    let schema = &table["properties"]["schema"];
    assert_eq!(schema["name"], TABLE);
    assert_eq!(table["properties"]["plan"], "Analytics", "analytics rules cannot query a Basic table");
    let table_columns = columns(&schema["columns"], "table");
    for c in schema["columns"].as_array().unwrap() {
        assert!(c["description"].as_str().is_some_and(|d| !d.is_empty()), "table column {} has no description", c["name"]);
    }

    let dcr = resource(&t, "Microsoft.Insights/dataCollectionRules");
    let declarations = dcr["properties"]["streamDeclarations"].as_object().expect("streamDeclarations");
    assert_eq!(declarations.keys().collect::<Vec<_>>(), [STREAM], "the DCR declares exactly the stream the sink posts to");
    let stream_columns = columns(&declarations[STREAM]["columns"], "stream");

    assert_eq!(table_columns, stream_columns, "the table and the DCR stream declaration differ (names, types or order)");
    assert_eq!(table_columns, declared(), "the table differs from crowsnest::sink::sentinel::row::COLUMNS");
}

#[test]
fn column_names_and_types_are_ones_log_analytics_accepts() {
    assert_eq!(COLUMNS.first().copied(), Some(("TimeGenerated", "datetime")), "TimeGenerated comes first and is a datetime");
    let mut seen: Vec<String> = Vec::new();
    for (name, ty) in COLUMNS {
        assert!(!RESERVED.contains(name), "{name} is a reserved column name");
        assert!(!name.starts_with('_'), "{name}: names beginning with _ are reserved");
        assert!(name.len() <= 45, "{name} is longer than 45 characters");
        assert!(name.starts_with(|c: char| c.is_ascii_alphabetic()), "{name} must start with a letter");
        assert!(name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'), "{name}: letters, digits and _ only");
        assert!(STREAM_TYPES.contains(ty), "{name}: {ty} is not a stream column type");
        let lower = name.to_ascii_lowercase();
        assert!(!seen.contains(&lower), "{name} repeats a column (names are case-insensitive)");
        seen.push(lower);
    }
}

#[test]
fn the_dcr_is_direct_and_flows_the_stream_unchanged_into_the_table() {
    let t = template("crowsnest-sentinel.json");
    let dcr = resource(&t, "Microsoft.Insights/dataCollectionRules");
    assert_eq!(dcr["kind"], "Direct", "only a Direct DCR gets its own logs ingestion endpoint");
    assert_eq!(dcr["apiVersion"], "2023-03-11");
    let p = &dcr["properties"];
    assert!(p.get("dataCollectionEndpointId").is_none(), "the DCR's own endpoint is used, no DCE");
    let destinations: Vec<&str> = p["destinations"]["logAnalytics"]
        .as_array()
        .expect("a Log Analytics destination")
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    let flows = p["dataFlows"].as_array().expect("dataFlows");
    assert_eq!(flows.len(), 1);
    let flow = &flows[0];
    assert_eq!(flow["streams"], serde_json::json!([STREAM]));
    assert_eq!(flow["outputStream"], format!("Custom-{TABLE}"));
    assert_eq!(flow["transformKql"], "source", "rows go into the table as the sink sends them");
    for d in flow["destinations"].as_array().unwrap() {
        assert!(destinations.contains(&d.as_str().unwrap()), "data flow destination {d} is not declared");
    }
    let deps = dcr["dependsOn"].to_string();
    assert!(deps.contains("workspaces/tables") && deps.contains(TABLE), "the DCR is created after its table");
}

#[test]
fn the_identity_gets_monitoring_metrics_publisher_on_the_dcr() {
    let t = template("crowsnest-sentinel.json");
    let ra = resource(&t, "Microsoft.Authorization/roleAssignments");
    let role = ra["properties"]["roleDefinitionId"].as_str().unwrap();
    let role_id = if role.contains("variables('") { t["variables"]["monitoringMetricsPublisher"].as_str().unwrap() } else { role };
    assert!(role_id.contains(MONITORING_METRICS_PUBLISHER), "role is {role}");
    assert!(ra["scope"].as_str().unwrap().contains("Microsoft.Insights/dataCollectionRules"), "assigned on the DCR, not wider");
    assert!(ra["name"].as_str().unwrap().starts_with("[guid("), "a deterministic name, so a redeploy does not duplicate it");
    assert_eq!(ra["properties"]["principalId"], "[parameters('principalId')]");
    for p in ["workspaceName", "location", "principalId", "principalType", "tableRetentionDays", "dcrName"] {
        assert!(t["parameters"].get(p).is_some(), "parameter {p} is missing");
    }
    for o in ["logsIngestionEndpoint", "dcrImmutableId", "streamName", "sinkUrl"] {
        assert!(t["outputs"].get(o).is_some(), "output {o} is missing");
    }
    assert_eq!(t["outputs"]["streamName"]["value"], STREAM);
    let url = t["outputs"]["sinkUrl"]["value"].as_str().unwrap();
    assert!(url.contains("'sentinel://'") && url.contains(&format!("&stream={STREAM}")) && url.contains("&auth="), "{url}");
}

/// `{{Column}}` placeholders of an alert name or description format.
fn placeholders(format: &str) -> Vec<&str> {
    format.split("{{").skip(1).map(|s| s.split("}}").next().unwrap().trim()).collect()
}

#[test]
fn the_analytics_rule_only_names_columns_the_table_has() {
    let t = template("crowsnest-analytics-rule.json");
    let rule = resource(&t, "Microsoft.SecurityInsights/alertRules");
    assert_eq!(rule["kind"], "Scheduled");
    let p = &rule["properties"];
    let query = p["query"].as_str().unwrap();
    assert!(query.contains(TABLE), "the rule reads {TABLE}");
    assert!(query.contains("arg_max(TimeGenerated, *) by AlertId"), "the rule drops repeated AlertIds");
    assert_eq!(p["eventGroupingSettings"]["aggregationKind"], "AlertPerResult", "one alert per Crowsnest alert");
    assert!(["Informational", "Low", "Medium", "High"].contains(&p["severity"].as_str().unwrap()));
    for tactic in p["tactics"].as_array().unwrap() {
        assert!(SENTINEL_TACTICS.contains(&tactic.as_str().unwrap()), "{tactic} is not a Sentinel tactic");
    }
    assert_eq!(p["incidentConfiguration"]["createIncident"], true);

    let known = |c: &str| COLUMNS.iter().any(|(n, _)| *n == c);
    let mut named: Vec<String> = Vec::new();
    for m in p["entityMappings"].as_array().unwrap() {
        for f in m["fieldMappings"].as_array().unwrap() {
            named.push(f["columnName"].as_str().unwrap().to_string());
        }
    }
    let custom = p["customDetails"].as_object().unwrap();
    assert!(custom.len() <= 20, "Sentinel allows 20 custom details");
    named.extend(custom.values().map(|v| v.as_str().unwrap().to_string()));
    let o = &p["alertDetailsOverride"];
    for key in ["alertSeverityColumnName", "alertTacticsColumnName"] {
        named.push(o[key].as_str().unwrap_or_else(|| panic!("{key} is not set")).to_string());
    }
    for key in ["alertDisplayNameFormat", "alertDescriptionFormat"] {
        let f = o[key].as_str().unwrap();
        let ps = placeholders(f);
        assert!(!ps.is_empty() && ps.len() <= 3, "{key}: Sentinel takes one to three {{{{column}}}} parameters: {f}");
        named.extend(ps.into_iter().map(str::to_string));
    }
    for d in o["alertDynamicProperties"].as_array().into_iter().flatten() {
        named.push(d["value"].as_str().unwrap().to_string());
    }
    for c in &named {
        assert!(known(c), "the analytics rule names {c}, which is not a column of {TABLE}");
    }
    // The incidents are grouped, if at all, only by details the rule defines.
    let g = &p["incidentConfiguration"]["groupingConfiguration"];
    for k in g["groupByCustomDetails"].as_array().into_iter().flatten() {
        assert!(custom.contains_key(k.as_str().unwrap()), "grouping by {k}, which is not a custom detail");
    }
    let entity_types: Vec<&str> = p["entityMappings"].as_array().unwrap().iter().map(|m| m["entityType"].as_str().unwrap()).collect();
    assert_eq!(entity_types, ["Account", "IP", "AzureResource"]);
}
