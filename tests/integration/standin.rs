//! The Sentinel stand-in itself (Entra ID token endpoint and Logs Ingestion API): what it issues,
//! what it accepts, what it refuses and with which status and code, its scripted failures, being
//! down, a restart on the same port, and its HTTP/1.1 framing on a raw socket.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crowsnest::standin::logs_ingestion::{ColumnType, Scripted, Standin, StandinConfig};
use serde_json::{json, Value};

use crowsnest::standin::pki::test_pki;

const STREAM: &str = "Custom-Alerts";

fn streams() -> BTreeMap<String, Vec<(String, ColumnType)>> {
    let cols = [
        ("TimeGenerated", "datetime"),
        ("RuleId", "string"),
        ("Severity", "int"),
        ("Count", "long"),
        ("Score", "real"),
        ("Blocked", "boolean"),
        ("Details", "dynamic"),
    ];
    let cols = cols.iter().map(|(n, t)| (n.to_string(), ColumnType::parse(t).expect("a DCR type"))).collect();
    BTreeMap::from([(STREAM.to_string(), cols)])
}

/// An HTTPS stand-in (after `tweak`) and a client that trusts the test CA alone.
fn https_standin(tweak: impl FnOnce(&mut StandinConfig)) -> (Standin, reqwest::Client) {
    let pki = test_pki();
    let mut cfg = StandinConfig::new(streams());
    cfg.tls = Some((pki.cert_pem.clone(), pki.key_pem.clone()));
    tweak(&mut cfg);
    let standin = Standin::start(cfg).expect("stand-in starts");
    (standin, client(&pki.ca_pem, Duration::from_secs(20)))
}

fn client(ca_pem: &[u8], timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(ca_pem).expect("CA PEM")])
        .no_proxy()
        .timeout(timeout)
        .build()
        .expect("reqwest client")
}

fn form(pairs: &[(&str, &str)]) -> String {
    let enc = |s: &str| {
        s.bytes()
            .map(|b| if b.is_ascii_alphanumeric() || b"-._~".contains(&b) { (b as char).to_string() } else { format!("%{b:02X}") })
            .collect::<String>()
    };
    pairs.iter().map(|(k, v)| format!("{}={}", enc(k), enc(v))).collect::<Vec<_>>().join("&")
}

fn secret_form<'a>(client_id: &'a str, secret: &'a str, scope: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![("grant_type", "client_credentials"), ("client_id", client_id), ("client_secret", secret), ("scope", scope)]
}

/// POSTs a token request; (status, JSON body, raw body).
async fn token_request(c: &reqwest::Client, base: &str, tenant: &str, pairs: &[(&str, &str)]) -> (u16, Value, String) {
    let resp = c
        .post(format!("{base}/{tenant}/oauth2/v2.0/token"))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(form(pairs))
        .send()
        .await
        .expect("token request answered");
    let status = resp.status().as_u16();
    let text = resp.text().await.expect("token body");
    (status, serde_json::from_str(&text).expect("token body is JSON"), text)
}

async fn token(s: &Standin, c: &reqwest::Client) -> String {
    let cfg = StandinConfig::new(streams());
    let (status, body, _) = token_request(c, &s.base_url(), &cfg.tenant_id, &secret_form(&cfg.client_id, "test-secret", &cfg.scope)).await;
    assert_eq!(status, 200, "{body}");
    body["access_token"].as_str().expect("access_token").to_string()
}

fn ingest_url(s: &Standin, dcr: &str, stream: &str) -> String {
    format!("{}/dataCollectionRules/{dcr}/streams/{stream}?api-version=2023-01-01", s.base_url())
}

fn dcr() -> String {
    StandinConfig::new(BTreeMap::new()).dcr_immutable_id
}

fn gz(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).expect("gzip");
    e.finish().expect("gzip")
}

fn row(rule: &str) -> Value {
    json!({"TimeGenerated": "2026-05-01T10:00:00.123Z", "RuleId": rule, "Severity": 3, "Count": 12_000_000_000i64,
           "Score": 0.5, "Blocked": false, "Details": {"pod": "web-1", "ports": [443]}})
}

async fn upload(c: &reqwest::Client, url: &str, token: Option<&str>, body: Vec<u8>, gzip: bool) -> reqwest::Response {
    let mut req = c.post(url).header("Content-Type", "application/json").header("x-ms-client-request-id", "req-1");
    if gzip {
        req = req.header("Content-Encoding", "gzip");
    }
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    req.body(body).send().await.expect("ingestion request answered")
}

/// Status, x-ms-error-code and the error body of a refused upload.
async fn refused(resp: reqwest::Response) -> (u16, String, Value) {
    let status = resp.status().as_u16();
    let code = resp.headers().get("x-ms-error-code").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let body: Value = serde_json::from_slice(&resp.bytes().await.expect("error body")).expect("error body is JSON");
    assert_eq!(body["error"]["code"], code.as_str(), "body code and header code agree");
    (status, code, body)
}

#[tokio::test]
async fn token_for_a_client_secret_and_for_a_client_assertion() {
    let (s, c) = https_standin(|cfg| cfg.federated_token = Some("federated.jwt.token".into()));
    let cfg = StandinConfig::new(streams());
    let (status, body, _) = token_request(&c, &s.base_url(), &cfg.tenant_id, &secret_form(&cfg.client_id, "test-secret", &cfg.scope)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3600);
    assert_eq!(body["ext_expires_in"], 3600);
    assert!(body["access_token"].as_str().is_some_and(|t| t.len() >= 32));

    let assertion = [
        ("grant_type", "client_credentials"),
        ("client_id", cfg.client_id.as_str()),
        ("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"),
        ("client_assertion", "federated.jwt.token"),
        // Entra reads the single-slash form of the scope as the same resource.
        ("scope", "https://monitor.azure.com/.default"),
    ];
    let (status, body, _) = token_request(&c, &s.base_url(), &cfg.tenant_id, &assertion).await;
    assert_eq!(status, 200, "{body}");
    let other = body["access_token"].as_str().expect("access_token");

    let grants: Vec<(String, u16)> = s.tokens().into_iter().map(|t| (t.grant, t.status)).collect();
    assert_eq!(grants, [("client_secret".to_string(), 200), ("client_assertion".to_string(), 200)]);
    // The assertion's token is good for ingestion.
    let resp = upload(&c, &ingest_url(&s, &dcr(), STREAM), Some(other), json!([row("a")]).to_string().into_bytes(), false).await;
    assert_eq!(resp.status().as_u16(), 204);
}

#[tokio::test]
async fn token_refusals_in_entras_shape() {
    let (s, c) = https_standin(|cfg| cfg.federated_token = Some("federated.jwt.token".into()));
    let cfg = StandinConfig::new(streams());
    let (tenant, client_id, scope) = (cfg.tenant_id.as_str(), cfg.client_id.as_str(), cfg.scope.as_str());
    let jwt = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
    // (tenant, form, status, error, AADSTS code)
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, u16, &'a str, u64);
    let cases: Vec<Case> = vec![
        (tenant, secret_form(client_id, "wrong-secret", scope), 401, "invalid_client", 7000215),
        (
            tenant,
            vec![
                ("grant_type", "client_credentials"),
                ("client_id", client_id),
                ("client_assertion_type", jwt),
                ("client_assertion", "someone.elses.token"),
                ("scope", scope),
            ],
            401,
            "invalid_client",
            700211,
        ),
        (tenant, secret_form(client_id, "test-secret", "https://nowhere.example.com/.default"), 400, "invalid_resource", 500011),
        (tenant, secret_form(client_id, "test-secret", "https://monitor.azure.com/user_impersonation"), 400, "invalid_scope", 1002012),
        ("11111111-1111-1111-1111-111111111111", secret_form(client_id, "test-secret", scope), 400, "invalid_request", 90002),
        (tenant, secret_form("99999999-9999-9999-9999-999999999999", "test-secret", scope), 400, "unauthorized_client", 700016),
        (tenant, vec![("grant_type", "password"), ("client_id", client_id), ("scope", scope)], 400, "unsupported_grant_type", 70003),
        (tenant, vec![("grant_type", "client_credentials"), ("client_id", client_id), ("scope", scope)], 401, "invalid_client", 7000218),
    ];
    for (tenant, pairs, want_status, want_error, want_code) in cases {
        let (status, body, raw) = token_request(&c, &s.base_url(), tenant, &pairs).await;
        assert_eq!((status, body["error"].as_str()), (want_status, Some(want_error)), "{body}");
        assert_eq!(body["error_codes"], json!([want_code]), "{body}");
        let description = body["error_description"].as_str().expect("error_description");
        assert!(description.starts_with(&format!("AADSTS{want_code}: ")), "{description}");
        for field in ["timestamp", "trace_id", "correlation_id", "error_uri"] {
            assert!(body[field].is_string(), "{field} in {body}");
        }
        // azure_identity reads error_description as a borrowed str: no JSON escapes in it.
        assert!(!raw.contains('\\'), "{raw}");
        assert!(body.get("access_token").is_none());
    }
    assert!(s.tokens().iter().all(|t| t.status != 200));
}

#[tokio::test]
async fn ingest_accepts_a_gzipped_array() {
    let (s, c) = https_standin(|_| {});
    let t = token(&s, &c).await;
    let rows = json!([row("a"), row("b"), {"TimeGenerated": "2026-05-01 10:00:01Z", "RuleId": null, "Details": null}]);
    let raw = rows.to_string().into_bytes();
    let wire = gz(&raw);
    let resp = upload(&c, &ingest_url(&s, &dcr(), STREAM), Some(&t), wire.clone(), true).await;
    assert_eq!(resp.status().as_u16(), 204);
    assert!(resp.headers().get("x-ms-request-id").is_some());
    assert_eq!(s.accepted_rows(STREAM), rows.as_array().expect("array").clone());
    let log = s.requests();
    assert_eq!(log.len(), 1);
    let r = &log[0];
    assert_eq!((r.stream.as_str(), r.status, r.gzip, r.rows), (STREAM, 204, true, 3));
    assert_eq!((r.wire_bytes, r.raw_bytes), (wire.len(), raw.len()));
    assert_eq!(r.client_request_id.as_deref(), Some("req-1"));
    assert_eq!(r.error_code, None);

    // Uncompressed works too, and an empty array is a (rowless) success.
    let resp = upload(&c, &ingest_url(&s, &dcr(), STREAM), Some(&t), json!([row("c")]).to_string().into_bytes(), false).await;
    assert_eq!(resp.status().as_u16(), 204);
    let resp = upload(&c, &ingest_url(&s, &dcr(), STREAM), Some(&t), b"[]".to_vec(), false).await;
    assert_eq!(resp.status().as_u16(), 204);
    assert_eq!(s.accepted_rows(STREAM).len(), 4);
}

#[tokio::test]
async fn ingest_refuses_missing_unknown_expired_revoked_and_foreign_tokens() {
    let (s, c) = https_standin(|cfg| cfg.token_valid_for = Some(Duration::from_millis(300)));
    let url = ingest_url(&s, &dcr(), STREAM);
    let body = || json!([row("a")]).to_string().into_bytes();

    let (status, code, _) = refused(upload(&c, &url, None, body(), false).await).await;
    assert_eq!((status, code.as_str()), (401, "AuthenticationFailed"));
    let (status, code, _) = refused(upload(&c, &url, Some("not-a-token"), body(), false).await).await;
    assert_eq!((status, code.as_str()), (401, "InvalidAuthenticationToken"));

    let t = token(&s, &c).await;
    assert_eq!(upload(&c, &url, Some(&t), body(), false).await.status().as_u16(), 204);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let (status, code, _) = refused(upload(&c, &url, Some(&t), body(), false).await).await;
    assert_eq!((status, code.as_str()), (401, "ExpiredAuthenticationToken"));

    let t = token(&s, &c).await;
    s.revoke_tokens();
    let (status, code, _) = refused(upload(&c, &url, Some(&t), body(), false).await).await;
    assert_eq!((status, code.as_str()), (401, "InvalidAuthenticationToken"));

    // Entra issues a token for another resource; ingestion refuses its audience.
    let cfg = StandinConfig::new(streams());
    let (status, body_json, _) = token_request(
        &c,
        &s.base_url(),
        &cfg.tenant_id,
        &secret_form(&cfg.client_id, "test-secret", "https://management.azure.com/.default"),
    )
    .await;
    assert_eq!(status, 200);
    let arm = body_json["access_token"].as_str().expect("access_token");
    let resp = upload(&c, &url, Some(arm), body(), false).await;
    assert!(resp.headers().get("www-authenticate").is_some());
    let (status, code, _) = refused(resp).await;
    assert_eq!((status, code.as_str()), (401, "InvalidAuthenticationTokenAudience"));

    assert_eq!(s.accepted_rows(STREAM).len(), 1);
    let statuses: Vec<u16> = s.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [401, 401, 204, 401, 401, 401]);
}

#[tokio::test]
async fn ingest_refuses_bodies_that_do_not_fit_the_stream() {
    let (s, c) = https_standin(|_| {});
    let t = token(&s, &c).await;
    let url = ingest_url(&s, &dcr(), STREAM);
    let mut extra = row("a");
    extra["Namespace"] = json!("default");
    let mut no_time = row("a");
    no_time.as_object_mut().expect("object").remove("TimeGenerated");
    let mut null_time = row("a");
    null_time["TimeGenerated"] = Value::Null;
    let with = |col: &str, v: Value| {
        let mut r = row("a");
        r[col] = v;
        json!([row("ok"), r])
    };
    let cases: Vec<(Value, &str)> = vec![
        (json!([extra]), "Namespace"),
        (json!([no_time]), "TimeGenerated"),
        (json!([null_time]), "TimeGenerated"),
        (with("Severity", json!("high")), "Severity"),
        (with("Severity", json!(1.5)), "Severity"),
        (with("Severity", json!(3_000_000_000i64)), "Severity"),
        (with("Count", json!("12")), "Count"),
        (with("Score", json!("0.5")), "Score"),
        (with("Blocked", json!(1)), "Blocked"),
        (with("RuleId", json!(7)), "RuleId"),
        (with("TimeGenerated", json!("yesterday")), "TimeGenerated"),
        (with("TimeGenerated", json!(1714557600)), "TimeGenerated"),
    ];
    for (body, column) in cases {
        let (status, code, err) = refused(upload(&c, &url, Some(&t), body.to_string().into_bytes(), false).await).await;
        assert_eq!((status, code.as_str()), (400, "InvalidPayload"), "{body}");
        assert_eq!(err["error"]["target"], column, "{err}");
        assert!(err["error"]["message"].as_str().is_some_and(|m| m.contains(column)), "{err}");
    }
    for body in [json!(row("a")).to_string(), "[1, 2]".to_string(), "[{\"RuleId\": ".to_string(), String::new()] {
        let (status, code, _) = refused(upload(&c, &url, Some(&t), body.clone().into_bytes(), false).await).await;
        assert_eq!((status, code.as_str()), (400, "InvalidPayload"), "{body}");
    }
    // Not gzip though it says so.
    let (status, code, _) = refused(upload(&c, &url, Some(&t), b"[{}]".to_vec(), true).await).await;
    assert_eq!((status, code.as_str()), (400, "InvalidPayload"));
    // No api-version, another api-version, another media type.
    let ok_body = || json!([row("a")]).to_string().into_bytes();
    let bare = format!("{}/dataCollectionRules/{}/streams/{STREAM}", s.base_url(), dcr());
    let (status, code, _) = refused(upload(&c, &bare, Some(&t), ok_body(), false).await).await;
    assert_eq!((status, code.as_str()), (400, "MissingApiVersionParameter"));
    let (status, _, _) = refused(upload(&c, &format!("{bare}?api-version=2020-01-01"), Some(&t), ok_body(), false).await).await;
    assert_eq!(status, 400);
    let resp = c.post(&url).bearer_auth(&t).header("Content-Type", "text/plain").body(ok_body()).send().await.expect("answered");
    let (status, code, _) = refused(resp).await;
    assert_eq!((status, code.as_str()), (415, "UnsupportedMediaType"));
    assert!(s.accepted_rows(STREAM).is_empty());
}

#[tokio::test]
async fn ingest_refuses_too_large_bodies_with_413() {
    let (s, c) = https_standin(|_| {});
    let t = token(&s, &c).await;
    let url = ingest_url(&s, &dcr(), STREAM);
    // 1.2 MB on the wire: refused after the head, the connection drained and closed.
    let big = json!([{"TimeGenerated": "2026-05-01T10:00:00Z", "RuleId": "x".repeat(1_200_000)}]).to_string().into_bytes();
    let (status, code, err) = refused(upload(&c, &url, Some(&t), big.clone(), false).await).await;
    assert_eq!((status, code.as_str()), (413, "ContentLengthLimitExceeded"), "{err}");
    // Small gzipped, over the limit decompressed.
    let (status, code, _) = refused(upload(&c, &url, Some(&t), gz(&big), true).await).await;
    assert_eq!((status, code.as_str()), (413, "ContentLengthLimitExceeded"));
    // Exactly the limit is fine.
    let pad = 1_000_000 - json!([{"TimeGenerated": "2026-05-01T10:00:00Z", "RuleId": ""}]).to_string().len();
    let exact = json!([{"TimeGenerated": "2026-05-01T10:00:00Z", "RuleId": "y".repeat(pad)}]).to_string();
    assert_eq!(exact.len(), 1_000_000);
    let resp = upload(&c, &url, Some(&t), exact.into_bytes(), false).await;
    assert_eq!(resp.status().as_u16(), 204);
    let log = s.requests();
    assert_eq!(log.iter().map(|r| r.status).collect::<Vec<_>>(), [413, 413, 204]);
    assert_eq!(log[0].wire_bytes, big.len());
    assert!(log[1].gzip && log[1].raw_bytes > 1_000_000);
}

#[tokio::test]
async fn ingest_answers_404_and_405_for_unknown_places() {
    let (s, c) = https_standin(|_| {});
    let t = token(&s, &c).await;
    let body = || json!([row("a")]).to_string().into_bytes();
    let (status, code, _) =
        refused(upload(&c, &ingest_url(&s, "dcr-ffffffffffffffffffffffffffffffff", STREAM), Some(&t), body(), false).await).await;
    assert_eq!((status, code.as_str()), (404, "NotFound"));
    let (status, code, _) = refused(upload(&c, &ingest_url(&s, &dcr(), "Custom-Other"), Some(&t), body(), false).await).await;
    assert_eq!((status, code.as_str()), (404, "InvalidStream"));
    let resp = c.get(ingest_url(&s, &dcr(), STREAM)).bearer_auth(&t).send().await.expect("answered");
    assert_eq!(resp.status().as_u16(), 405);
    let resp = c.post(format!("{}/subscriptions", s.base_url())).body("x").send().await.expect("answered");
    assert_eq!(resp.status().as_u16(), 404);
    assert_eq!(s.requests().len(), 2, "only requests to the ingestion route are logged");
}

#[tokio::test]
async fn scripted_answers_then_normal_handling() {
    let (s, c) = https_standin(|_| {});
    let t = token(&s, &c).await;
    let url = ingest_url(&s, &dcr(), STREAM);
    s.script(vec![
        Scripted::Status { status: 429, retry_after: Some("7".into()), error_code: None },
        Scripted::Status { status: 500, retry_after: None, error_code: None },
        Scripted::Status { status: 503, retry_after: Some("1".into()), error_code: Some("ServerBusy".into()) },
        Scripted::Status { status: 413, retry_after: None, error_code: None },
        Scripted::Hang(Duration::from_millis(1500)),
    ]);
    let body = || gz(json!([row("a"), row("b")]).to_string().as_bytes());
    let want = [
        (429, "TooManyRequests", Some("7")),
        (500, "InternalServerError", None),
        (503, "ServerBusy", Some("1")),
        (413, "ContentLengthLimitExceeded", None),
    ];
    for (status, code, retry_after) in want {
        let resp = upload(&c, &url, Some(&t), body(), true).await;
        assert_eq!(resp.headers().get("retry-after").and_then(|v| v.to_str().ok()), retry_after);
        assert_eq!(refused(resp).await, (status, code.to_string(), json!({"error": {"code": code, "message": refused_message(status)}})));
    }
    let started = Instant::now();
    let err = c
        .post(&url)
        .bearer_auth(&t)
        .header("Content-Type", "application/json")
        .header("Content-Encoding", "gzip")
        .timeout(Duration::from_millis(400))
        .body(body())
        .send()
        .await
        .expect_err("a hang is no answer");
    assert!(err.is_timeout(), "{err:?}");
    assert!(started.elapsed() < Duration::from_millis(1400));
    assert_eq!(upload(&c, &url, Some(&t), body(), true).await.status().as_u16(), 204);
    let log: Vec<(u16, usize)> = s.requests().iter().map(|r| (r.status, r.rows)).collect();
    assert_eq!(log, [(429, 2), (500, 2), (503, 2), (413, 2), (0, 2), (204, 2)]);
    assert_eq!(s.accepted_rows(STREAM).len(), 2, "scripted answers store nothing");
}

fn refused_message(status: u16) -> &'static str {
    match status {
        429 => "Too many requests. Retry after the time in the Retry-After header.",
        500 => "An internal server error occurred.",
        503 => "The service is temporarily unavailable.",
        413 => "Maximum allowed content length: 1048576 bytes (1 MB).",
        _ => unreachable!(),
    }
}

#[tokio::test]
async fn down_is_a_connection_error_and_a_restart_keeps_the_port() {
    let pki = test_pki();
    let mut cfg = StandinConfig::new(streams());
    cfg.tls = Some((pki.cert_pem.clone(), pki.key_pem.clone()));
    let s = Standin::start(cfg.clone()).expect("stand-in starts");
    let c = client(&pki.ca_pem, Duration::from_secs(10));
    let t = token(&s, &c).await;
    let url = ingest_url(&s, &dcr(), STREAM);
    let body = || json!([row("a")]).to_string().into_bytes();
    assert_eq!(upload(&c, &url, Some(&t), body(), false).await.status().as_u16(), 204);

    s.set_down(true);
    for _ in 0..2 {
        let err = c.post(&url).bearer_auth(&t).header("Content-Type", "application/json").body(body()).send().await;
        let err = err.expect_err("down: no answer");
        assert!(!err.is_status() && !err.is_timeout(), "{err:?}");
    }
    // A fresh connection fails as well.
    let fresh = client(&pki.ca_pem, Duration::from_secs(10));
    assert!(fresh.post(&url).body(body()).send().await.is_err());
    s.set_down(false);
    assert_eq!(upload(&c, &url, Some(&t), body(), false).await.status().as_u16(), 204);

    // Stop (with a kept-alive connection open) is prompt, and the port can be bound again.
    let addr = s.addr();
    let started = Instant::now();
    s.stop();
    assert!(started.elapsed() < Duration::from_secs(2), "stop took {:?}", started.elapsed());
    let s = Standin::start_on(cfg, &addr.to_string()).expect("restart on the same port");
    assert_eq!(s.addr(), addr);
    let c = client(&pki.ca_pem, Duration::from_secs(10));
    let t2 = token(&s, &c).await;
    let (status, code, _) = refused(upload(&c, &url, Some(&t), body(), false).await).await;
    assert_eq!((status, code.as_str()), (401, "InvalidAuthenticationToken"), "a restarted stand-in knows no old token");
    assert_eq!(upload(&c, &url, Some(&t2), body(), false).await.status().as_u16(), 204);
}

/// One response off a raw socket: (status, headers lower-cased, body).
fn read_response(sock: &mut TcpStream) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        assert_eq!(sock.read(&mut byte).expect("response head"), 1, "connection closed in the head");
        buf.push(byte[0]);
    }
    let head = String::from_utf8(buf).expect("ASCII head");
    let mut lines = head.split("\r\n");
    let status = lines.next().and_then(|l| l.split(' ').nth(1)).and_then(|s| s.parse().ok()).expect("status line");
    let headers: Vec<(String, String)> =
        lines.filter_map(|l| l.split_once(':')).map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string())).collect();
    let len = headers.iter().find(|(k, _)| k == "content-length").map(|(_, v)| v.parse().expect("length")).unwrap_or(0);
    let mut body = vec![0u8; len];
    sock.read_exact(&mut body).expect("response body");
    (status, headers, body)
}

#[test]
fn http_framing_on_a_raw_socket() {
    fn shareable<T: Send + Sync>() {}
    shareable::<Standin>();
    let s = Standin::start(StandinConfig::new(streams())).expect("plain stand-in");
    assert!(s.base_url().starts_with("http://127.0.0.1:"));
    let cfg = StandinConfig::new(streams());
    let mut sock = TcpStream::connect(s.addr()).expect("connect");
    sock.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");

    // A token, then a chunked, gzipped upload and an uncompressed one on the same connection.
    let f = form(&secret_form(&cfg.client_id, "test-secret", &cfg.scope));
    let req = format!(
        "POST /{}/oauth2/v2.0/token HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{f}",
        cfg.tenant_id,
        f.len()
    );
    sock.write_all(req.as_bytes()).expect("write");
    let (status, _, body) = read_response(&mut sock);
    assert_eq!(status, 200);
    let body: Value = serde_json::from_slice(&body).expect("JSON");
    let t = body["access_token"].as_str().expect("token").to_string();

    let payload = gz(json!([row("a"), row("b")]).to_string().as_bytes());
    let (first, rest) = payload.split_at(payload.len() / 2);
    let mut req = format!(
        "POST /dataCollectionRules/{}/streams/{STREAM}?api-version=2023-01-01 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {t}\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n",
        cfg.dcr_immutable_id
    )
    .into_bytes();
    for chunk in [first, rest] {
        req.extend_from_slice(format!("{:x};ext=1\r\n", chunk.len()).as_bytes());
        req.extend_from_slice(chunk);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\nX-Trailer: 1\r\n\r\n");
    // The second request rides in the same write (pipelined).
    let plain = json!([row("c")]).to_string();
    req.extend_from_slice(
        format!(
            "POST /dataCollectionRules/{}/streams/{STREAM}?api-version=2023-01-01 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {t}\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: {}\r\n\r\n{plain}",
            cfg.dcr_immutable_id,
            plain.len()
        )
        .as_bytes(),
    );
    sock.write_all(&req).expect("write");
    let (status, headers, body) = read_response(&mut sock);
    assert_eq!(status, 204);
    assert!(body.is_empty() && !headers.iter().any(|(k, _)| k == "content-length"));
    assert_eq!(read_response(&mut sock).0, 204);
    assert_eq!(s.accepted_rows(STREAM).len(), 3);

    // Malformed: no Host, a bad chunk size, a bad Content-Length; each a 400 and a close.
    for bad in [
        "POST /x HTTP/1.1\r\nContent-Length: 0\r\n\r\n".to_string(),
        "POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n".to_string(),
        "POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 1x\r\n\r\n".to_string(),
        "POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n".to_string(),
        "GARBAGE\r\n\r\n".to_string(),
    ] {
        let mut sock = TcpStream::connect(s.addr()).expect("connect");
        sock.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        sock.write_all(bad.as_bytes()).expect("write");
        let (status, headers, _) = read_response(&mut sock);
        assert_eq!(status, 400, "{bad:?}");
        assert!(headers.iter().any(|(k, v)| k == "connection" && v == "close"), "{bad:?}");
        let mut rest = Vec::new();
        let _ = sock.read_to_end(&mut rest);
        assert!(rest.is_empty(), "closed after the 400");
    }
    // A head over 64 KiB.
    let mut sock = TcpStream::connect(s.addr()).expect("connect");
    sock.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let huge = format!("POST /x HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "a".repeat(70 * 1024));
    let _ = sock.write_all(huge.as_bytes());
    assert_eq!(read_response(&mut sock).0, 431);
}
