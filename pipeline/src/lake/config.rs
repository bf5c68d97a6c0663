//! `[sinks.lake]` and the `--lake URL` flag: where the lake is and how files are rolled.
//!
//! ```toml
//! [sinks.lake]
//! url = "az://security/aks-lake"            # or file:///var/lib/crowsnest/lake, abfss://…
//! options = { azure_storage_account_name = "contososeclake" }
//! roll_bytes = 134217728                    # a file is closed at this size (Parquet, zstd)
//! roll_age = "5m"                           # … or this long after its first row
//! ```
//!
//! Azure credentials come from the environment as the Azure SDKs read them
//! (`AZURE_STORAGE_ACCOUNT_KEY`, `AZURE_STORAGE_SAS_KEY`, workload identity's
//! `AZURE_CLIENT_ID`/`AZURE_TENANT_ID`/`AZURE_FEDERATED_TOKEN_FILE`, managed identity), or from
//! `options` (any `azure_*` key object_store knows). A URL never carries a secret: a query key
//! naming one is refused, so a key cannot end up in a shell history or a process list.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use crate::rules::parse_duration;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LakeConfig {
    /// file:///PATH (or a path), az://CONTAINER/PREFIX, abfss://CONTAINER@ACCOUNT.dfs.core.windows.net/PREFIX,
    /// https://ACCOUNT.blob.core.windows.net/CONTAINER/PREFIX.
    pub url: String,
    /// object_store Azure settings (`azure_storage_account_name`, `azure_storage_endpoint`,
    /// `azure_use_azure_cli`, …), on top of the environment's.
    #[serde(default)]
    pub options: BTreeMap<String, String>,
    /// A file is closed once its Parquet form reaches this size.
    #[serde(default = "default_roll_bytes")]
    pub roll_bytes: u64,
    /// … or once its first row has waited this long (a quiet cluster's rows become visible).
    #[serde(default = "default_roll_age")]
    pub roll_age: String,
    /// Open files together may hold this much before the largest is closed early.
    #[serde(default = "default_max_open_bytes")]
    pub max_open_bytes: u64,
}

fn default_roll_bytes() -> u64 {
    128 << 20
}
fn default_roll_age() -> String {
    "5m".to_string()
}
fn default_max_open_bytes() -> u64 {
    512 << 20
}

/// Where a lake is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    Local(PathBuf),
    /// An object_store Azure URL (az://, abfss://, https://…) and the prefix inside the container.
    Azure {
        url: String,
        prefix: String,
    },
}

impl LakeConfig {
    pub fn from_url(url: &str) -> Result<LakeConfig> {
        let (base, query) = url.split_once('?').unwrap_or((url, ""));
        let mut options = BTreeMap::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, "true"));
            let k = crate::url::percent_decode(k, true).with_context(|| format!("lake URL option {k:?}"))?;
            let v = crate::url::percent_decode(v, true).with_context(|| format!("lake URL option {k}"))?;
            let lower = k.to_ascii_lowercase();
            if ["key", "secret", "sas", "token", "sig"].iter().any(|s| lower.contains(s)) {
                bail!("lake URL option {k:?} would put a secret in a URL: set it in the environment or in [sinks.lake] options");
            }
            let key = match lower.as_str() {
                "account" => "azure_storage_account_name".to_string(),
                "endpoint" => "azure_storage_endpoint".to_string(),
                "allow_http" => "azure_allow_http".to_string(),
                "use_azure_cli" => "azure_use_azure_cli".to_string(),
                _ => lower,
            };
            options.insert(key, v);
        }
        let cfg = LakeConfig {
            url: base.to_string(),
            options,
            roll_bytes: default_roll_bytes(),
            roll_age: default_roll_age(),
            max_open_bytes: default_max_open_bytes(),
        };
        cfg.location()?;
        Ok(cfg)
    }

    pub fn location(&self) -> Result<Location> {
        let url = self.url.trim();
        // A query here (a [sinks.lake] url; --lake URLs have theirs taken as options above)
        // could be a SAS token: refused without echoing it, as the URL is what logs show.
        if url.contains(['?', '#']) {
            bail!("[sinks.lake] url: give it without ?… (a SAS token belongs in AZURE_STORAGE_SAS_KEY; other settings in options)");
        }
        if let Some(path) = url.strip_prefix("file://") {
            if !path.starts_with('/') {
                bail!("lake URL {url:?}: a file URL takes an absolute path (file:///var/lib/crowsnest/lake)");
            }
            return Ok(Location::Local(PathBuf::from(path)));
        }
        for scheme in ["az://", "azure://", "abfs://", "abfss://", "adl://", "https://"] {
            if let Some(rest) = url.strip_prefix(scheme) {
                // az://CONTAINER/PREFIX, abfss://CONTAINER@HOST/PREFIX, https://HOST/CONTAINER/PREFIX
                let path = match scheme {
                    "https://" => rest.split_once('/').and_then(|(_, p)| p.split_once('/')).map_or("", |(_, p)| p),
                    _ => rest.split_once('/').map_or("", |(_, p)| p),
                };
                return Ok(Location::Azure { url: url.to_string(), prefix: path.trim_matches('/').to_string() });
            }
        }
        if url.contains("://") {
            bail!("lake URL {url:?}: use file:///PATH, az://CONTAINER/PREFIX or abfss://CONTAINER@ACCOUNT.dfs.core.windows.net/PREFIX");
        }
        let path = PathBuf::from(url);
        Ok(Location::Local(if path.is_absolute() { path } else { std::env::current_dir()?.join(path) }))
    }

    pub fn roll_age(&self) -> Result<std::time::Duration> {
        let ns = parse_duration(&self.roll_age).context("[sinks.lake] roll_age")?;
        Ok(std::time::Duration::from_nanos(ns.max(1) as u64))
    }

    /// The URL without options, for logs (it holds no secret: options may).
    pub fn display(&self) -> &str {
        &self.url
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_give_a_location_and_options_but_never_a_secret() {
        let c = LakeConfig::from_url("az://sec/aks/lake?account=contoso&endpoint=http://127.0.0.1:1/devstoreaccount1").unwrap();
        assert_eq!(c.location().unwrap(), Location::Azure { url: "az://sec/aks/lake".into(), prefix: "aks/lake".into() });
        assert_eq!(c.options["azure_storage_account_name"], "contoso");
        assert_eq!(c.options["azure_storage_endpoint"], "http://127.0.0.1:1/devstoreaccount1");
        let c = LakeConfig::from_url("abfss://sec@contoso.dfs.core.windows.net/lake").unwrap();
        assert!(matches!(c.location().unwrap(), Location::Azure { prefix, .. } if prefix == "lake"));
        assert_eq!(LakeConfig::from_url("file:///tmp/l").unwrap().location().unwrap(), Location::Local("/tmp/l".into()));
        let e = LakeConfig::from_url("az://sec/lake?azure_storage_account_key=c2VjcmV0").unwrap_err().to_string();
        assert!(e.contains("secret") && !e.contains("c2VjcmV0"), "{e}");
        assert!(LakeConfig::from_url("s3://b/l").is_err());
        let in_file = LakeConfig { url: "https://a.blob.core.windows.net/c/lake?sv=2024&sig=c2VjcmV0".into(), ..c };
        let e = in_file.location().unwrap_err().to_string();
        assert!(!e.contains("c2VjcmV0"), "{e}");
    }
}
