//! MITRE ATT&CK technique → tactic, in the names Microsoft Sentinel accepts for an alert's
//! tactics (`InitialAccess`, `PrivilegeEscalation`…: the `AttackTactic` enum of the
//! `Microsoft.SecurityInsights` API), so the Sentinel row's `Tactics` column can override an
//! analytics rule's tactics per alert.
//!
//! The table covers every technique the bundled rules name (Enterprise matrix, which holds the
//! Containers platform), with ATT&CK's own tactic list for each. A sub-technique has its parent's
//! tactics (`T1550.001` is looked up as `T1550`). An unknown technique has none: the rule still
//! loads and the alert still goes out, with fewer tactics.

/// ATT&CK's Enterprise tactics in kill-chain (matrix) order, spelled as Sentinel spells them.
/// `tactics_for` sorts by this order.
pub const KILL_CHAIN: &[&str] = &[
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

const EXECUTION: &str = "Execution";
const PERSISTENCE: &str = "Persistence";
const PRIVILEGE_ESCALATION: &str = "PrivilegeEscalation";
const DEFENSE_EVASION: &str = "DefenseEvasion";
const CREDENTIAL_ACCESS: &str = "CredentialAccess";
const DISCOVERY: &str = "Discovery";
const INITIAL_ACCESS: &str = "InitialAccess";
const LATERAL_MOVEMENT: &str = "LateralMovement";
const COLLECTION: &str = "Collection";
const COMMAND_AND_CONTROL: &str = "CommandAndControl";
const IMPACT: &str = "Impact";

/// (technique, its name, its tactics as ATT&CK lists them). Sorted by technique id.
const TECHNIQUES: &[(&str, &str, &[&str])] = &[
    ("T1036", "Masquerading", &[DEFENSE_EVASION]),
    ("T1040", "Network Sniffing", &[CREDENTIAL_ACCESS, DISCOVERY]),
    ("T1053", "Scheduled Task/Job (.007 Container Orchestration Job)", &[EXECUTION, PERSISTENCE, PRIVILEGE_ESCALATION]),
    ("T1059", "Command and Scripting Interpreter", &[EXECUTION]),
    ("T1069", "Permission Groups Discovery", &[DISCOVERY]),
    ("T1070", "Indicator Removal", &[DEFENSE_EVASION]),
    ("T1078", "Valid Accounts", &[DEFENSE_EVASION, PERSISTENCE, PRIVILEGE_ESCALATION, INITIAL_ACCESS]),
    ("T1087", "Account Discovery", &[DISCOVERY]),
    ("T1090", "Proxy", &[COMMAND_AND_CONTROL]),
    ("T1098", "Account Manipulation", &[PERSISTENCE, PRIVILEGE_ESCALATION]),
    ("T1105", "Ingress Tool Transfer", &[COMMAND_AND_CONTROL]),
    ("T1110", "Brute Force", &[CREDENTIAL_ACCESS]),
    ("T1133", "External Remote Services", &[PERSISTENCE, INITIAL_ACCESS]),
    ("T1136", "Create Account", &[PERSISTENCE]),
    ("T1190", "Exploit Public-Facing Application", &[INITIAL_ACCESS]),
    ("T1204", "User Execution (.003 Malicious Image)", &[EXECUTION]),
    ("T1485", "Data Destruction", &[IMPACT]),
    ("T1496", "Resource Hijacking", &[IMPACT]),
    ("T1499", "Endpoint Denial of Service", &[IMPACT]),
    ("T1525", "Implant Internal Image", &[PERSISTENCE]),
    ("T1528", "Steal Application Access Token", &[CREDENTIAL_ACCESS]),
    ("T1546", "Event Triggered Execution", &[PRIVILEGE_ESCALATION, PERSISTENCE]),
    ("T1548", "Abuse Elevation Control Mechanism", &[PRIVILEGE_ESCALATION, DEFENSE_EVASION]),
    ("T1550", "Use Alternate Authentication Material", &[DEFENSE_EVASION, LATERAL_MOVEMENT]),
    ("T1552", "Unsecured Credentials", &[CREDENTIAL_ACCESS]),
    ("T1557", "Adversary-in-the-Middle", &[CREDENTIAL_ACCESS, COLLECTION]),
    ("T1562", "Impair Defenses", &[DEFENSE_EVASION]),
    ("T1572", "Protocol Tunneling", &[COMMAND_AND_CONTROL]),
    ("T1609", "Container Administration Command", &[EXECUTION]),
    ("T1610", "Deploy Container", &[DEFENSE_EVASION, EXECUTION]),
    ("T1611", "Escape to Host", &[PRIVILEGE_ESCALATION]),
    ("T1613", "Container and Resource Discovery", &[DISCOVERY]),
    ("T1649", "Steal or Forge Authentication Certificates", &[CREDENTIAL_ACCESS]),
];

/// The Sentinel tactics of a MITRE ATT&CK technique id (`T1611`, or a sub-technique such as
/// `T1550.001`, whose parent's tactics it has), as ATT&CK lists them. Empty for an id the table
/// does not know.
pub fn tactics_of(technique: &str) -> &'static [&'static str] {
    let id = technique.trim();
    let base = id.split_once('.').map_or(id, |(base, _)| base);
    TECHNIQUES.iter().find(|(t, _, _)| t.eq_ignore_ascii_case(base)).map_or(&[], |(_, _, tactics)| tactics)
}

/// The tactics of all these techniques: each once, in kill-chain order (`KILL_CHAIN`), so the
/// same techniques in any order give the same string.
pub fn tactics_for(techniques: &[String]) -> Vec<&'static str> {
    KILL_CHAIN.iter().copied().filter(|tactic| techniques.iter().any(|t| tactics_of(t).contains(tactic))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every technique the bundled detections name (detections/rules), parents only.
    const BUNDLED: &[&str] = &[
        "T1036", "T1040", "T1053", "T1059", "T1069", "T1070", "T1078", "T1087", "T1090", "T1098", "T1105", "T1110", "T1133", "T1136",
        "T1190", "T1204", "T1485", "T1496", "T1499", "T1525", "T1528", "T1546", "T1548", "T1550", "T1552", "T1557", "T1562", "T1572",
        "T1609", "T1610", "T1611", "T1613", "T1649",
    ];

    fn strings(ids: &[&str]) -> Vec<String> {
        ids.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn every_bundled_technique_has_a_tactic_sentinel_accepts() {
        for t in BUNDLED {
            let tactics = tactics_of(t);
            assert!(!tactics.is_empty(), "{t} maps to no tactic");
            for tactic in tactics {
                assert!(KILL_CHAIN.contains(tactic), "{t}: {tactic} is not a Sentinel tactic name");
            }
        }
        assert_eq!(TECHNIQUES.len(), BUNDLED.len(), "the table and the bundled list differ");
    }

    /// A rule added later with a technique the table lacks fails here, not silently in Sentinel.
    /// (Only under cargo: a bare `rustc --test` of this file has no manifest dir to find them.)
    #[test]
    fn every_technique_in_the_bundled_rules_has_a_tactic() {
        let Some(manifest) = option_env!("CARGO_MANIFEST_DIR") else { return };
        let dir = std::path::Path::new(manifest).join("../detections/rules");
        let mut checked = 0;
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "yaml" && e != "yml") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let b = text.as_bytes();
            for i in 0..b.len().saturating_sub(4) {
                let starts_word = i == 0 || !b[i - 1].is_ascii_alphanumeric();
                let id_follows = b[i] == b'T' && b[i + 1..i + 5].iter().all(u8::is_ascii_digit);
                let ends_word = b.get(i + 5).is_none_or(|c| !c.is_ascii_alphanumeric());
                if starts_word && id_follows && ends_word {
                    let id = &text[i..i + 5];
                    assert!(!tactics_of(id).is_empty(), "{}: {id} has no tactics in the table", path.display());
                    checked += 1;
                }
            }
        }
        assert!(checked > 0, "no technique ids found under {}", dir.display());
    }

    #[test]
    fn the_table_is_sorted_and_has_no_repeats() {
        assert!(TECHNIQUES.windows(2).all(|w| w[0].0 < w[1].0), "technique ids out of order or repeated");
        for (t, _, tactics) in TECHNIQUES {
            let mut seen: Vec<&str> = Vec::new();
            for tactic in *tactics {
                assert!(!seen.contains(tactic), "{t} lists {tactic} twice");
                seen.push(tactic);
            }
        }
    }

    #[test]
    fn a_sub_technique_has_its_parents_tactics() {
        assert_eq!(tactics_of("T1550.001"), tactics_of("T1550"));
        assert_eq!(tactics_of("T1550.001"), &["DefenseEvasion", "LateralMovement"]);
        assert_eq!(tactics_of("T1552.007"), &["CredentialAccess"]);
        assert_eq!(tactics_of(" t1611 "), &["PrivilegeEscalation"]);
    }

    #[test]
    fn unknown_techniques_have_no_tactics() {
        assert!(tactics_of("T9999").is_empty());
        assert!(tactics_of("T9999.001").is_empty());
        assert!(tactics_of("").is_empty());
        assert!(tactics_of("attack.execution").is_empty());
        assert!(tactics_for(&strings(&["T9999", "nonsense"])).is_empty());
        assert!(tactics_for(&[]).is_empty());
    }

    #[test]
    fn tactics_for_is_in_kill_chain_order_without_repeats() {
        // Escape to host then exec: the order of the input does not matter.
        assert_eq!(tactics_for(&strings(&["T1611", "T1609"])), ["Execution", "PrivilegeEscalation"]);
        assert_eq!(tactics_for(&strings(&["T1609", "T1611"])), ["Execution", "PrivilegeEscalation"]);
        // Valid accounts and account manipulation share Persistence and PrivilegeEscalation.
        assert_eq!(
            tactics_for(&strings(&["T1098.001", "T1078.004", "T1098"])),
            ["InitialAccess", "Persistence", "PrivilegeEscalation", "DefenseEvasion"]
        );
        // Impact sorts last, after command and control; unknown ids are skipped.
        assert_eq!(tactics_for(&strings(&["T1496", "T9999", "T1105", "T1613"])), ["Discovery", "CommandAndControl", "Impact"]);
    }
}
