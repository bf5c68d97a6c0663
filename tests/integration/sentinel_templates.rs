//! The Azure side of the Sentinel sink (deploy/sentinel/) against the sink's own row definition:
//! the table, the DCR's stream declaration and `row::COLUMNS` must be the same columns in the same
//! order with the same types, every name must be one Log Analytics accepts, and the analytics rule
//! may only name columns that exist. A column added to one place and not the others fails here,
//! not as a 400 from the Logs Ingestion API or a rule that silently maps nothing. The optional
//! normalized-events stream (`forwardAuditEvents`) must declare exactly
//! `asim_columns::ASIM_AUDIT_COLUMNS`, all of them documented columns of `ASimAuditEventLogs`.

use serde_json::{Map, Value};

use crowsnest::sink::sentinel::asim_columns::ASIM_AUDIT_COLUMNS;
use crowsnest::sink::sentinel::row::COLUMNS;

use crate::common::repo_root;

const TABLE: &str = "Crowsnest_Alerts_CL";
const STREAM: &str = "Custom-CrowsnestAlert";
/// The normalized audit events: the stream the sink posts them to, the table they land in.
const AUDIT_STREAM: &str = "Custom-CrowsnestAuditEvents";
const ASIM_AUDIT_OUTPUT: &str = "Microsoft-ASimAuditEventLogs";
/// The DCR's streamDeclarations and dataFlows: the alert stream always, the audit-event stream
/// with forwardAuditEvents. `stream_declarations` and `data_flows` evaluate exactly these.
const STREAM_DECLARATIONS_EXPR: &str =
    "[union(variables('alertStreamDeclarations'), if(parameters('forwardAuditEvents'), variables('auditEventStreamDeclarations'), createObject()))]";
const DATA_FLOWS_EXPR: &str =
    "[concat(variables('alertDataFlows'), if(parameters('forwardAuditEvents'), variables('auditEventDataFlows'), createArray()))]";
/// The columns of ASimAuditEventLogs a DCR can fill, with their types, as the Azure Monitor table
/// reference lists them (system columns TenantId, Type, SourceSystem, _ResourceId,
/// _SubscriptionId, _BilledSize, _IsBillable left out):
/// https://learn.microsoft.com/azure/azure-monitor/reference/tables/asimauditeventlogs
/// (MicrosoftDocs/azure-reference-other, azure-monitor-ref/tables/includes/asimauditeventlogs-include.md,
/// 02/18/2024). The ASIM aliases (EventSchema, Dvc, User, Application, Src, Dst, IpAddr, Value,
/// Rule, EventUid) are not table columns: the ASIM parsers add them at query time. The reference
/// writes ThreatIsActive's type as bool, which a stream declares as boolean.
const ASIM_AUDIT_EVENT_LOGS: &[(&str, &str)] = &[
    ("TimeGenerated", "datetime"),
    ("ActingAppId", "string"),
    ("ActingAppName", "string"),
    ("ActingAppType", "string"),
    ("ActingOriginalAppType", "string"),
    ("ActorOriginalUserType", "string"),
    ("ActorScope", "string"),
    ("ActorScopeId", "string"),
    ("ActorSessionId", "string"),
    ("ActorUserAadId", "string"),
    ("ActorUserId", "string"),
    ("ActorUserIdType", "string"),
    ("ActorUsername", "string"),
    ("ActorUsernameType", "string"),
    ("ActorUserSid", "string"),
    ("ActorUserType", "string"),
    ("AdditionalFields", "dynamic"),
    ("DvcAction", "string"),
    ("DvcDescription", "string"),
    ("DvcDomain", "string"),
    ("DvcDomainType", "string"),
    ("DvcFQDN", "string"),
    ("DvcHostname", "string"),
    ("DvcId", "string"),
    ("DvcIdType", "string"),
    ("DvcInterface", "string"),
    ("DvcIpAddr", "string"),
    ("DvcMacAddr", "string"),
    ("DvcOriginalAction", "string"),
    ("DvcOs", "string"),
    ("DvcOsVersion", "string"),
    ("DvcScope", "string"),
    ("DvcScopeId", "string"),
    ("DvcZone", "string"),
    ("EventCount", "int"),
    ("EventEndTime", "datetime"),
    ("EventMessage", "string"),
    ("EventOriginalResultDetails", "string"),
    ("EventOriginalSeverity", "string"),
    ("EventOriginalSubType", "string"),
    ("EventOriginalType", "string"),
    ("EventOriginalUid", "string"),
    ("EventOwner", "string"),
    ("EventProduct", "string"),
    ("EventProductVersion", "string"),
    ("EventReportUrl", "string"),
    ("EventResult", "string"),
    ("EventResultDetails", "string"),
    ("EventSchemaVersion", "string"),
    ("EventSeverity", "string"),
    ("EventStartTime", "datetime"),
    ("EventSubType", "string"),
    ("EventType", "string"),
    ("EventVendor", "string"),
    ("HttpUserAgent", "string"),
    ("NewValue", "string"),
    ("Object", "string"),
    ("ObjectId", "string"),
    ("ObjectType", "string"),
    ("OldValue", "string"),
    ("Operation", "string"),
    ("OriginalObjectType", "string"),
    ("RuleName", "string"),
    ("RuleNumber", "int"),
    ("SrcDescription", "string"),
    ("SrcDeviceType", "string"),
    ("SrcDomain", "string"),
    ("SrcDomainType", "string"),
    ("SrcDvcId", "string"),
    ("SrcDvcIdType", "string"),
    ("SrcDvcScope", "string"),
    ("SrcDvcScopeId", "string"),
    ("SrcFQDN", "string"),
    ("SrcGeoCity", "string"),
    ("SrcGeoCountry", "string"),
    ("SrcGeoLatitude", "real"),
    ("SrcGeoLongitude", "real"),
    ("SrcGeoRegion", "string"),
    ("SrcHostname", "string"),
    ("SrcIpAddr", "string"),
    ("SrcOriginalRiskLevel", "string"),
    ("SrcPortNumber", "int"),
    ("SrcRiskLevel", "int"),
    ("TargetAppId", "string"),
    ("TargetAppName", "string"),
    ("TargetAppType", "string"),
    ("TargetDescription", "string"),
    ("TargetDeviceType", "string"),
    ("TargetDomain", "string"),
    ("TargetDomainType", "string"),
    ("TargetDvcId", "string"),
    ("TargetDvcIdType", "string"),
    ("TargetDvcOs", "string"),
    ("TargetDvcScope", "string"),
    ("TargetDvcScopeId", "string"),
    ("TargetFQDN", "string"),
    ("TargetGeoCity", "string"),
    ("TargetGeoCountry", "string"),
    ("TargetGeoLatitude", "real"),
    ("TargetGeoLongitude", "real"),
    ("TargetGeoRegion", "string"),
    ("TargetHostname", "string"),
    ("TargetIpAddr", "string"),
    ("TargetOriginalAppType", "string"),
    ("TargetOriginalRiskLevel", "string"),
    ("TargetPortNumber", "int"),
    ("TargetRiskLevel", "int"),
    ("TargetUrl", "string"),
    ("ThreatCategory", "string"),
    ("ThreatConfidence", "int"),
    ("ThreatField", "string"),
    ("ThreatFirstReportedTime", "datetime"),
    ("ThreatId", "string"),
    ("ThreatIpAddr", "string"),
    ("ThreatIsActive", "boolean"),
    ("ThreatLastReportedTime", "datetime"),
    ("ThreatName", "string"),
    ("ThreatOriginalConfidence", "string"),
    ("ThreatOriginalRiskLevel", "string"),
    ("ThreatRiskLevel", "int"),
    ("ValueType", "string"),
];
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

/// The DCR's stream declarations as deployed with `forwardAuditEvents` = `forward`.
fn stream_declarations(t: &Value, forward: bool) -> Map<String, Value> {
    let dcr = resource(t, "Microsoft.Insights/dataCollectionRules");
    assert_eq!(dcr["properties"]["streamDeclarations"], STREAM_DECLARATIONS_EXPR, "streamDeclarations");
    let mut m = t["variables"]["alertStreamDeclarations"].as_object().expect("variables.alertStreamDeclarations").clone();
    if forward {
        m.extend(t["variables"]["auditEventStreamDeclarations"].as_object().expect("variables.auditEventStreamDeclarations").clone());
    }
    m
}

/// The DCR's data flows as deployed with `forwardAuditEvents` = `forward`.
fn data_flows(t: &Value, forward: bool) -> Vec<Value> {
    let dcr = resource(t, "Microsoft.Insights/dataCollectionRules");
    assert_eq!(dcr["properties"]["dataFlows"], DATA_FLOWS_EXPR, "dataFlows");
    let mut v = t["variables"]["alertDataFlows"].as_array().expect("variables.alertDataFlows").clone();
    if forward {
        v.extend(t["variables"]["auditEventDataFlows"].as_array().expect("variables.auditEventDataFlows").iter().cloned());
    }
    v
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

    let declarations = stream_declarations(&t, false);
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
    let flows = data_flows(&t, false);
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

#[test]
fn the_audit_event_stream_declares_the_asim_columns_and_flows_into_asim_audit_event_logs() {
    let t = template("crowsnest-sentinel.json");
    let param = &t["parameters"]["forwardAuditEvents"];
    assert_eq!(param["type"], "bool");
    assert_eq!(param["defaultValue"], false, "forwarding events is opt-in");

    // Without the parameter: the alert stream alone, as before.
    let off = stream_declarations(&t, false);
    assert_eq!(off.keys().collect::<Vec<_>>(), [STREAM]);
    let flows_off = data_flows(&t, false);
    assert_eq!(flows_off.len(), 1);
    assert_eq!(flows_off[0]["streams"], serde_json::json!([STREAM]));

    // With it: both streams; the alert stream unchanged, the events stream = ASIM_AUDIT_COLUMNS.
    let on = stream_declarations(&t, true);
    let mut keys: Vec<&str> = on.keys().map(String::as_str).collect();
    keys.sort_unstable();
    let mut expected = vec![STREAM, AUDIT_STREAM];
    expected.sort_unstable();
    assert_eq!(keys, expected);
    assert_eq!(on[STREAM], off[STREAM], "forwarding events leaves the alert stream as it is");
    let audit_columns = columns(&on[AUDIT_STREAM]["columns"], "audit event stream");
    let asim: Vec<(String, String)> = ASIM_AUDIT_COLUMNS.iter().map(|(n, ty)| (n.to_string(), ty.to_string())).collect();
    assert_eq!(audit_columns, asim, "the stream declaration differs from asim_columns::ASIM_AUDIT_COLUMNS (names, types or order)");

    let flows = data_flows(&t, true);
    assert_eq!(flows.len(), 2);
    assert_eq!(flows[0], flows_off[0], "the alert flow is unchanged");
    let flow = &flows[1];
    assert_eq!(flow["streams"], serde_json::json!([AUDIT_STREAM]));
    assert_eq!(flow["outputStream"], ASIM_AUDIT_OUTPUT);
    assert_eq!(flow["transformKql"], "source", "rows go into ASimAuditEventLogs as the sink sends them");
    let dcr = resource(&t, "Microsoft.Insights/dataCollectionRules");
    let destinations: Vec<&str> =
        dcr["properties"]["destinations"]["logAnalytics"].as_array().unwrap().iter().map(|d| d["name"].as_str().unwrap()).collect();
    for d in flow["destinations"].as_array().unwrap() {
        assert!(destinations.contains(&d.as_str().unwrap()), "data flow destination {d} is not declared");
    }

    let out = &t["outputs"]["eventsStreamName"];
    assert_eq!(out["condition"], "[parameters('forwardAuditEvents')]");
    assert_eq!(out["value"], AUDIT_STREAM);
}

#[test]
fn every_asim_column_is_a_documented_column_of_asim_audit_event_logs() {
    assert_eq!(ASIM_AUDIT_COLUMNS.first().copied(), Some(("TimeGenerated", "datetime")));
    let mut seen: Vec<&str> = Vec::new();
    for (name, ty) in ASIM_AUDIT_COLUMNS {
        let documented = ASIM_AUDIT_EVENT_LOGS.iter().find(|(n, _)| n == name);
        let Some((_, doc_ty)) = documented else { panic!("{name} is not a column of ASimAuditEventLogs") };
        assert_eq!(ty, doc_ty, "{name}: the table declares it {doc_ty}");
        assert!(STREAM_TYPES.contains(ty), "{name}: {ty} is not a stream column type");
        assert!(!seen.contains(name), "{name} twice");
        seen.push(*name);
    }
    // Mandatory ASIM Audit Event fields that are table columns (EventSchema and Dvc are aliases
    // the parsers add; the table has neither).
    for mandatory in [
        "EventCount",
        "EventStartTime",
        "EventEndTime",
        "EventType",
        "EventResult",
        "EventProduct",
        "EventVendor",
        "EventSchemaVersion",
        "Operation",
        "Object",
        "ObjectType",
    ] {
        assert!(seen.contains(&mandatory), "mandatory ASIM field {mandatory} is not mapped");
    }
}
