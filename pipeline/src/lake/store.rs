//! The lake's storage, local or Azure, behind object_store, with the few blocking operations the
//! writer and the maintenance commands need. Writes are create-only: a file that already
//! exists was written by an earlier run from the same rows (names say what a file holds), so
//! "already exists" is success and a replay never duplicates.

use std::sync::Arc;

use anyhow::{Context, Result};
use futures::TryStreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};

use super::config::{LakeConfig, Location};

/// The URL DataFusion knows the lake's store by (see [`Store::table_url`]).
pub const DATAFUSION_URL: &str = "crowsnest-lake://lake/";

/// One listed object, its path relative to the lake's prefix.
#[derive(Debug, Clone)]
pub struct Listed {
    pub path: String,
    pub size: u64,
    pub modified: chrono::DateTime<chrono::Utc>,
}

pub struct Store {
    inner: Arc<dyn ObjectStore>,
    /// Inside the store: the lake's prefix (empty for a local directory, which is the store's root).
    prefix: String,
    display: String,
    /// The store's I/O runs here, so callers on plain threads (the pipeline) and inside another
    /// runtime (the service) can both wait for it.
    rt: Arc<tokio::runtime::Runtime>,
}

impl Store {
    pub fn open(cfg: &LakeConfig) -> Result<Store> {
        let (inner, prefix): (Arc<dyn ObjectStore>, String) = match cfg.location()? {
            Location::Local(dir) => {
                std::fs::create_dir_all(&dir).with_context(|| format!("creating the lake directory {}", dir.display()))?;
                let fs = object_store::local::LocalFileSystem::new_with_prefix(&dir)
                    .with_context(|| format!("opening the lake directory {}", dir.display()))?;
                (Arc::new(fs), String::new())
            }
            Location::Azure { url, prefix } => {
                let mut b = object_store::azure::MicrosoftAzureBuilder::from_env().with_url(url.as_str());
                for (k, v) in &cfg.options {
                    let key = k.parse().with_context(|| format!("[sinks.lake] options: {k:?} is not an object_store Azure setting"))?;
                    b = b.with_config(key, v);
                }
                // The emulator and test endpoints speak plain HTTP; real storage accounts are
                // reached over HTTPS whatever this says.
                if cfg.options.get("azure_storage_endpoint").is_some_and(|e| e.starts_with("http://")) {
                    b = b.with_allow_http(true);
                }
                let azure = b.build().with_context(|| format!("lake {url}: Azure storage settings"))?;
                (Arc::new(azure), prefix)
            }
        };
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("cn-lake-io")
            .enable_all()
            .build()
            .context("starting the lake's I/O runtime")?;
        Ok(Store { inner, prefix, display: cfg.display().to_string(), rt: Arc::new(rt) })
    }

    pub fn display(&self) -> &str {
        &self.display
    }

    pub fn object_store(&self) -> Arc<dyn ObjectStore> {
        self.inner.clone()
    }

    /// The URL DataFusion lists a table's files under (its store registered as [`DATAFUSION_URL`]).
    pub fn table_url(&self, table: &str) -> String {
        format!("{DATAFUSION_URL}{}", self.full(&format!("{}/", super::layout::table_dir(table))))
    }

    fn full(&self, rel: &str) -> String {
        if self.prefix.is_empty() {
            rel.to_string()
        } else {
            format!("{}/{rel}", self.prefix)
        }
    }

    fn path(&self, rel: &str) -> ObjectPath {
        ObjectPath::from(self.full(rel).as_str())
    }

    fn block_on<T: Send + 'static>(&self, fut: impl std::future::Future<Output = T> + Send + 'static) -> T {
        let handle = self.rt.spawn(fut);
        futures::executor::block_on(handle).expect("lake I/O task panicked")
    }

    /// Writes a new object. Ok(false): it already existed (written before from the same rows).
    pub fn put_new(&self, rel: &str, bytes: Vec<u8>) -> Result<bool> {
        let (store, path) = (self.inner.clone(), self.path(rel));
        let opts = PutOptions { mode: PutMode::Create, ..PutOptions::default() };
        let result = self.block_on(async move { store.put_opts(&path, PutPayload::from(bytes), opts).await });
        match result {
            Ok(_) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(false),
            Err(e) => Err(anyhow::Error::new(e).context(format!("writing {rel} to the lake {}", self.display))),
        }
    }

    /// Every object under `rel_prefix` (a folder: `table=kube_audit/`), paths relative to the lake.
    pub fn list(&self, rel_prefix: &str) -> Result<Vec<Listed>> {
        let (store, path) = (self.inner.clone(), self.path(rel_prefix.trim_end_matches('/')));
        let skip = if self.prefix.is_empty() { 0 } else { self.prefix.len() + 1 };
        let metas = self.block_on(async move { store.list(Some(&path)).try_collect::<Vec<_>>().await });
        let metas = match metas {
            Ok(m) => m,
            Err(object_store::Error::NotFound { .. }) => vec![],
            Err(e) => return Err(anyhow::Error::new(e).context(format!("listing {rel_prefix} in the lake {}", self.display))),
        };
        let mut out: Vec<Listed> = metas
            .into_iter()
            .map(|m| Listed {
                path: m.location.as_ref().get(skip..).unwrap_or_default().to_string(),
                size: m.size,
                modified: m.last_modified,
            })
            .collect();
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }

    pub fn get(&self, rel: &str) -> Result<bytes::Bytes> {
        let (store, path) = (self.inner.clone(), self.path(rel));
        self.block_on(async move { store.get(&path).await?.bytes().await })
            .with_context(|| format!("reading {rel} from the lake {}", self.display))
    }

    /// Removes an object; one already gone is fine.
    pub fn delete(&self, rel: &str) -> Result<()> {
        let (store, path) = (self.inner.clone(), self.path(rel));
        match self.block_on(async move { store.delete(&path).await }) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(anyhow::Error::new(e).context(format!("deleting {rel} from the lake {}", self.display))),
        }
    }
}
