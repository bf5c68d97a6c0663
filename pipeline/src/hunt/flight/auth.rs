//! Who may query: bearer tokens read from a file or the environment, and the Basic handshake
//! (ADBC's and JDBC's username/password) that trades a user's token for a session token.
//!
//! The password of the Basic handshake *is* the user's token: one secret per user to issue and
//! revoke, whichever way a client signs in. Tokens are compared in constant time and are never
//! logged; a session token is kept only as its SHA-256.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use base64::Engine;
use sha2::{Digest, Sha256};
use tonic::metadata::MetadataMap;
use tonic::Status;

/// A token shorter than this is refused when loaded: it could be guessed.
pub const MIN_TOKEN_CHARS: usize = 16;
/// A session token from the handshake lives this long.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// Sessions kept per user; the user's oldest goes first (a client that signs in in a loop cannot
/// grow the server, nor push other users' sessions out).
const MAX_SESSIONS_PER_USER: usize = 100;
/// The user of every call when no token is configured (loopback only).
pub const LOCAL_USER: &str = "local";

/// The environment variable holding one token, as `USER:TOKEN` or just `TOKEN` (user `analyst`).
pub const TOKEN_ENV: &str = "CROWSNEST_SQL_TOKEN";

pub struct Authenticator {
    /// (user, SHA-256 of the token); empty: no authentication (the server refuses to listen
    /// beyond loopback).
    tokens: Vec<(String, [u8; 32])>,
    /// SHA-256 of a session token → (user, expiry).
    sessions: Mutex<HashMap<[u8; 32], (String, Instant)>>,
}

/// Names no token: only how many users there are.
impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator").field("users", &self.tokens.len()).finish_non_exhaustive()
    }
}

impl Authenticator {
    pub fn open() -> Authenticator {
        Authenticator { tokens: Vec::new(), sessions: Mutex::default() }
    }

    /// Tokens from `file` (lines `USER:TOKEN`, `#` comments) and from [`TOKEN_ENV`].
    pub fn load(file: Option<&Path>, env_token: Option<String>) -> Result<Authenticator> {
        let mut tokens = Vec::new();
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).with_context(|| format!("reading the token file {}", path.display()))?;
            for (i, line) in text.lines().enumerate() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                let Some((user, token)) = line.split_once(':') else {
                    bail!("{} line {}: give USER:TOKEN", path.display(), i + 1);
                };
                tokens.push(checked(user.trim(), token.trim(), &format!("{} line {}", path.display(), i + 1))?);
            }
        }
        if let Some(v) = env_token.filter(|v| !v.trim().is_empty()) {
            let (user, token) = v.trim().split_once(':').unwrap_or(("analyst", v.trim()));
            tokens.push(checked(user, token, TOKEN_ENV)?);
        }
        Ok(Authenticator { tokens, sessions: Mutex::default() })
    }

    pub fn required(&self) -> bool {
        !self.tokens.is_empty()
    }

    pub fn users(&self) -> usize {
        self.tokens.len()
    }

    /// The user a call is made as, from its `authorization` header.
    pub fn authorize(&self, metadata: &MetadataMap) -> Result<String, Status> {
        if !self.required() {
            return Ok(LOCAL_USER.to_string());
        }
        let header = metadata.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or_default();
        let Some(token) = strip_scheme(header, "bearer") else {
            return Err(Status::unauthenticated(
                "a bearer token is required (authorization: Bearer TOKEN, or sign in with username/password)",
            ));
        };
        if let Some(user) = self.user_of_token(token) {
            return Ok(user);
        }
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let mut sessions = self.sessions.lock().expect("sessions lock");
        match sessions.get(&key) {
            Some((user, expiry)) if *expiry > Instant::now() => Ok(user.clone()),
            Some(_) => {
                sessions.remove(&key);
                Err(Status::unauthenticated("the session token expired: sign in again"))
            }
            None => Err(Status::unauthenticated("the token is not valid")),
        }
    }

    /// The Basic handshake: `authorization: Basic base64(user:token)` (padded or not, as Go's
    /// client sends it) gives a fresh session token, answered as `authorization: Bearer …`.
    pub fn sign_in(&self, metadata: &MetadataMap) -> Result<(String, String), Status> {
        let header = metadata.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or_default();
        let (user, password) = if let Some(b64) = strip_scheme(header, "basic") {
            let engine = base64::engine::GeneralPurpose::new(
                &base64::alphabet::STANDARD,
                base64::engine::GeneralPurposeConfig::new().with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
            );
            let bytes = engine.decode(b64.trim()).map_err(|_| Status::invalid_argument("the Basic credentials are not base64"))?;
            let text = String::from_utf8(bytes).map_err(|_| Status::invalid_argument("the Basic credentials are not UTF-8"))?;
            let (u, p) = text.split_once(':').ok_or_else(|| Status::invalid_argument("the Basic credentials are not USER:PASSWORD"))?;
            (u.to_string(), p.to_string())
        } else if let Some(token) = strip_scheme(header, "bearer") {
            // A client may also "sign in" with its token; it gets it back as the session.
            let user = self.authorize(metadata)?;
            return Ok((user, token.to_string()));
        } else if !self.required() {
            (LOCAL_USER.to_string(), String::new())
        } else {
            return Err(Status::unauthenticated("sign in with username and password (Basic) or a bearer token"));
        };
        if self.required() && self.user_of_token(&password).as_deref() != Some(user.as_str()) {
            return Err(Status::unauthenticated("wrong username or password (the password is the user's token)"));
        }
        let session = new_session_token();
        let key: [u8; 32] = Sha256::digest(session.as_bytes()).into();
        let mut sessions = self.sessions.lock().expect("sessions lock");
        let now = Instant::now();
        sessions.retain(|_, (_, expiry)| *expiry > now);
        if sessions.values().filter(|(u, _)| *u == user).count() >= MAX_SESSIONS_PER_USER {
            if let Some(oldest) = sessions.iter().filter(|(_, (u, _))| *u == user).min_by_key(|(_, (_, e))| *e).map(|(k, _)| *k) {
                sessions.remove(&oldest);
            }
        }
        sessions.insert(key, (user.clone(), now + SESSION_TTL));
        Ok((user, session))
    }

    /// Every configured token is compared, by digest (so lengths tell nothing) and in constant
    /// time, whatever matches first.
    fn user_of_token(&self, token: &str) -> Option<String> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let mut found = None;
        for (user, t) in &self.tokens {
            if openssl::memcmp::eq(t, &digest) && found.is_none() {
                found = Some(user.clone());
            }
        }
        found
    }
}

fn checked(user: &str, token: &str, whence: &str) -> Result<(String, [u8; 32])> {
    if user.is_empty() || user.contains(char::is_whitespace) {
        bail!("{whence}: the user name must be one word");
    }
    if token.chars().count() < MIN_TOKEN_CHARS {
        bail!("{whence}: a token must have at least {MIN_TOKEN_CHARS} characters (openssl rand -hex 32 makes one)");
    }
    Ok((user.to_string(), Sha256::digest(token.as_bytes()).into()))
}

/// `Scheme value` with the scheme matched without regard to case.
fn strip_scheme<'a>(header: &'a str, scheme: &str) -> Option<&'a str> {
    let (s, rest) = header.split_once(' ')?;
    s.eq_ignore_ascii_case(scheme).then(|| rest.trim())
}

fn new_session_token() -> String {
    let mut bytes = [0u8; 32];
    openssl::rand::rand_bytes(&mut bytes).expect("the system's random source");
    format!("cns_{}", bytes.iter().map(|b| format!("{b:02x}")).collect::<String>())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn md(header: &str) -> MetadataMap {
        let mut m = MetadataMap::new();
        m.insert("authorization", header.parse().unwrap());
        m
    }

    #[test]
    fn tokens_sign_in_and_sessions_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tokens");
        std::fs::write(&file, "# analysts\nalice:aaaaaaaaaaaaaaaaaaaa\n\nbob: bbbbbbbbbbbbbbbbbbbb\n").unwrap();
        let auth = Authenticator::load(Some(&file), Some("carol:cccccccccccccccccccc".into())).unwrap();
        assert_eq!(auth.users(), 3);
        assert_eq!(auth.authorize(&md("Bearer bbbbbbbbbbbbbbbbbbbb")).unwrap(), "bob");
        assert_eq!(auth.authorize(&md("bearer cccccccccccccccccccc")).unwrap(), "carol");
        assert_eq!(auth.authorize(&md("Bearer nope")).unwrap_err().code(), tonic::Code::Unauthenticated);
        assert_eq!(auth.authorize(&MetadataMap::new()).unwrap_err().code(), tonic::Code::Unauthenticated);
        // Go's client sends unpadded base64.
        let basic = base64::engine::general_purpose::STANDARD_NO_PAD.encode("alice:aaaaaaaaaaaaaaaaaaaa");
        let (user, session) = auth.sign_in(&md(&format!("Basic {basic}"))).unwrap();
        assert_eq!(user, "alice");
        assert_eq!(auth.authorize(&md(&format!("Bearer {session}"))).unwrap(), "alice");
        // Bob's token is not Alice's password.
        let wrong = base64::engine::general_purpose::STANDARD.encode("alice:bbbbbbbbbbbbbbbbbbbb");
        assert_eq!(auth.sign_in(&md(&format!("Basic {wrong}"))).unwrap_err().code(), tonic::Code::Unauthenticated);
    }

    #[test]
    fn short_tokens_and_malformed_lines_are_refused() {
        assert!(Authenticator::load(None, Some("short".into())).unwrap_err().to_string().contains("at least 16"));
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tokens");
        std::fs::write(&file, "justatokenwithoutauser\n").unwrap();
        assert!(Authenticator::load(Some(&file), None).unwrap_err().to_string().contains("line 1: give USER:TOKEN"));
        let open = Authenticator::load(None, None).unwrap();
        assert!(!open.required());
        assert_eq!(open.authorize(&MetadataMap::new()).unwrap(), LOCAL_USER);
    }
}
