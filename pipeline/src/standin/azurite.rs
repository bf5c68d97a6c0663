//! The Azure Storage emulator, for the lake and Event Hubs tests and `bench --eventhubs`:
//! Azurite's blob service (`azurite-blob`, a Node.js program; `.ci/run` installs it with npm,
//! `AZURITE_BIN` points at another), started on a free loopback port with its data in a given
//! directory, and Azurite's well-known development account.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use sha2::{Digest, Sha256};

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Azurite's well-known development account (the same in every Azurite; not a secret).
pub const ACCOUNT: &str = "devstoreaccount1";
pub const KEY: &str = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// The Blob REST API version object_store 0.13 sends (`x-ms-version`). Azurite refuses versions
/// newer than its own (3.35.0 knows up to 2025-11-05), so no `--skipApiVersionCheck`: a too-old
/// Azurite fails loudly instead of emulating an API it does not know.
pub const API_VERSION: &str = "2023-11-03";

/// Where `.ci/run` installs Azurite (`npm install --prefix`) unless `AZURITE_PREFIX` says otherwise.
const DEFAULT_PREFIX: &str = ".cache/crowsnest/azurite";

pub fn azurite_bin() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("AZURITE_BIN") {
        return Ok(p.into());
    }
    let mut candidates: Vec<PathBuf> =
        std::env::var_os("PATH").map(|p| std::env::split_paths(&p).map(|d| d.join("azurite-blob")).collect()).unwrap_or_default();
    let prefix = std::env::var_os("AZURITE_PREFIX")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(DEFAULT_PREFIX)));
    candidates.extend(prefix.map(|p| p.join("node_modules/.bin/azurite-blob")));
    candidates.into_iter().find(|p| p.is_file()).ok_or_else(|| {
        anyhow!(
            "this needs the Azurite storage emulator (Node.js and npm): \
             npm install --prefix ~/{DEFAULT_PREFIX} azurite@3.35.0 (what .ci/run does), \
             or set AZURITE_BIN to an azurite-blob"
        )
    })
}

pub struct Azurite {
    child: Child,
    pub port: u16,
    /// Azurite's workspace (`--location`): its metadata databases and blob extents.
    dir: PathBuf,
    log: PathBuf,
}

impl Azurite {
    /// Starts the blob service with its data in `dir/azurite` and its output in `dir/azurite.log`.
    pub fn start(dir: &Path) -> Result<Azurite> {
        let data = dir.join("azurite");
        std::fs::create_dir_all(&data).context("Azurite's data directory")?;
        let log_path = dir.join("azurite.log");
        let log = std::fs::File::create(&log_path).context("Azurite's log")?;
        let port = free_port()?;
        let bin = azurite_bin()?;
        // --silent: no access log. --disableTelemetry: Azurite 3.35 otherwise sends usage
        // data to Microsoft from every test run.
        let child = Command::new(&bin)
            .args(["--blobHost", "127.0.0.1", "--blobPort", &port.to_string(), "--location"])
            .arg(&data)
            .args(["--silent", "--disableTelemetry"])
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {} (Azurite needs node on PATH)", bin.display()))?;
        let mut a = Azurite { child, port, dir: data, log: log_path };
        a.wait_ready()?;
        Ok(a)
    }

    /// The blob endpoint of the development account (path-style, as Azurite serves it).
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}/{ACCOUNT}", self.port)
    }

    fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        loop {
            if TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok() {
                return Ok(());
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                bail!("Azurite exited ({status}) before listening on {addr}:\n{}", self.log_tail());
            }
            if Instant::now() >= deadline {
                bail!(
                    "Azurite did not listen on {addr} within 30 s (data in {}); {}:\n{}",
                    self.dir.display(),
                    self.log.display(),
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Creates the blob container `name` through the REST API with Shared Key authorization
    /// (what the Azure CLI or Storage Explorer would do). True when created, false when it
    /// already existed; any other answer is an error.
    pub fn create_container(&self, name: &str) -> Result<bool> {
        let date = chrono::Utc::now().format("%a, %d %b %Y %H:%M:%S GMT").to_string();
        // https://learn.microsoft.com/en-us/rest/api/storageservices/authorize-with-shared-key
        // The verb, the 11 standard headers (all empty: a Content-Length of 0 is signed as an
        // empty line), the x-ms-* headers sorted, then /account + the URL path (the path
        // already starts with the account on Azurite) and the query parameters.
        let string_to_sign =
            format!("PUT\n{}x-ms-date:{date}\nx-ms-version:{API_VERSION}\n/{ACCOUNT}/{ACCOUNT}/{name}\nrestype:container", "\n".repeat(11));
        let signature = base64_encode(&hmac_sha256(&base64_decode(KEY), string_to_sign.as_bytes()));
        let request = format!(
            "PUT /{ACCOUNT}/{name}?restype=container HTTP/1.1\r\n\
             Host: 127.0.0.1:{port}\r\n\
             x-ms-date: {date}\r\n\
             x-ms-version: {API_VERSION}\r\n\
             Authorization: SharedKey {ACCOUNT}:{signature}\r\n\
             Content-Length: 0\r\n\
             Connection: close\r\n\r\n",
            port = self.port
        );
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).context("connecting to Azurite")?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        stream.write_all(request.as_bytes()).context("sending the request to Azurite")?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).context("Azurite's response")?;
        let response = String::from_utf8_lossy(&response);
        let status: Option<u16> = response.split_whitespace().nth(1).and_then(|c| c.parse().ok());
        match status {
            Some(201) => Ok(true),
            Some(409) if response.contains("ContainerAlreadyExists") => Ok(false),
            _ => bail!("creating container {name} in Azurite: {response}"),
        }
    }

    /// An account SAS for the blob service (read, write, delete, list, add, create; service,
    /// container and object level), signed with the development key, valid until 2099: what
    /// the Event Hubs checkpoint store uses here, since the Rust Blob client signs no Shared
    /// Key requests and Azurite takes no bearer token over plain HTTP.
    /// https://learn.microsoft.com/en-us/rest/api/storageservices/create-account-sas
    pub fn account_sas(&self) -> String {
        let (sv, ss, srt, sp, se, spr) = ("2023-11-03", "b", "sco", "rwdlac", "2099-01-01T00:00:00Z", "https,http");
        // Account name, permissions, services, resource types, start, expiry, IP, protocol,
        // version, encryption scope: each followed by a newline (versions since 2020-12-06).
        let string_to_sign = format!("{ACCOUNT}\n{sp}\n{ss}\n{srt}\n\n{se}\n\n{spr}\n{sv}\n\n");
        let sig = base64_encode(&hmac_sha256(&base64_decode(KEY), string_to_sign.as_bytes()));
        let sig: String = sig
            .chars()
            .map(|c| match c {
                '+' => "%2B".to_string(),
                '/' => "%2F".to_string(),
                '=' => "%3D".to_string(),
                c => c.to_string(),
            })
            .collect();
        format!("sv={sv}&ss={ss}&srt={srt}&sp={sp}&se={}&spr={}&sig={sig}", se.replace(':', "%3A"), spr.replace(',', "%2C"))
    }
}

impl Drop for Azurite {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// HMAC-SHA256 (RFC 2104) over 64-byte blocks.
fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut block = [0u8; 64];
    if key.len() > block.len() {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(block.map(|b| b ^ 0x36));
    inner.update(message);
    let inner = inner.finalize();
    let mut outer = Sha256::new();
    outer.update(block.map(|b| b ^ 0x5c));
    outer.update(inner);
    let mut mac = [0u8; 32];
    mac.copy_from_slice(&outer.finalize());
    mac
}

const BASE64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding.
fn base64_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, &b)| n | ((b as u32) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(BASE64[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn base64_decode(text: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text.bytes().filter(|&c| c != b'=') {
        let v = BASE64.iter().position(|&x| x == c).unwrap_or_else(|| panic!("not base64: {text}"));
        acc = (acc << 6) | v as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}
