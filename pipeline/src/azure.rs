//! Entra ID identities for everything Crowsnest does in Azure: the Sentinel sink, the Event Hubs
//! source and its Blob checkpoint store. The identity is chosen explicitly in the config, never
//! guessed from the environment (a DefaultAzureCredential chain would pick whatever the host
//! happens to offer); the SDK (`azure_identity`) caches tokens and refreshes them before expiry.
//!
//! Tokens and secrets never leave the SDK's credential except as the header or CBS token the
//! service needs: no log line, error or metric carries one.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{anyhow, Context, Result};
use azure_core::cloud::{CloudConfiguration, CustomConfiguration};
use azure_core::credentials::{Secret, TokenCredential};
use azure_core::http::{ClientOptions, Transport};
use azure_identity::{
    AzureCliCredential, AzureCliCredentialOptions, ClientAssertionCredentialOptions, ClientSecretCredential, ClientSecretCredentialOptions,
    ManagedIdentityCredential, ManagedIdentityCredentialOptions, UserAssignedId, WorkloadIdentityCredential,
    WorkloadIdentityCredentialOptions,
};
use serde::Deserialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMethod {
    /// A pod on AKS with Entra Workload ID: a federated service-account token exchanged for an
    /// Entra token (AZURE_TENANT_ID, AZURE_CLIENT_ID, AZURE_FEDERATED_TOKEN_FILE).
    WorkloadIdentity,
    /// An app registration's secret (AZURE_TENANT_ID, AZURE_CLIENT_ID, AZURE_CLIENT_SECRET).
    ClientSecret,
    /// The VM's or node pool's managed identity (IMDS).
    ManagedIdentity,
    /// `az login` on a laptop.
    AzureCli,
}

impl std::str::FromStr for AuthMethod {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "workload_identity" => AuthMethod::WorkloadIdentity,
            "client_secret" => AuthMethod::ClientSecret,
            "managed_identity" => AuthMethod::ManagedIdentity,
            "azure_cli" => AuthMethod::AzureCli,
            _ => anyhow::bail!("auth {s:?}: one of workload_identity, client_secret, managed_identity, azure_cli"),
        })
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Cloud {
    #[default]
    Public,
    Usgov,
    China,
}

impl Cloud {
    pub fn authority_host(self) -> &'static str {
        match self {
            Cloud::Public => "https://login.microsoftonline.com",
            Cloud::Usgov => "https://login.microsoftonline.us",
            Cloud::China => "https://login.chinacloudapi.cn",
        }
    }
}

impl std::str::FromStr for Cloud {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "public" => Cloud::Public,
            "usgov" => Cloud::Usgov,
            "china" => Cloud::China,
            _ => anyhow::bail!("cloud {s:?}: one of public, usgov, china"),
        })
    }
}

/// Who a client signs in as: the settings every Azure-facing section repeats.
#[derive(Debug, Clone)]
pub struct Identity {
    /// The config section, for errors: `[sinks.sentinel]`, `[source]`.
    pub section: &'static str,
    pub auth: AuthMethod,
    /// Default: $AZURE_TENANT_ID.
    pub tenant_id: Option<String>,
    /// Default: $AZURE_CLIENT_ID; for managed_identity a user-assigned identity's client id.
    pub client_id: Option<String>,
    /// client_secret only. Default: $AZURE_CLIENT_SECRET.
    pub client_secret: Option<String>,
    /// workload_identity only. Default: $AZURE_FEDERATED_TOKEN_FILE (the AKS webhook sets it).
    pub federated_token_file: Option<PathBuf>,
    /// The Entra ID endpoint in force (see [`authority_host`]).
    pub authority_host: String,
}

/// The authority host in force: the config's, else $AZURE_AUTHORITY_HOST, else the cloud's.
pub fn authority_host(configured: &Option<String>, cloud: Cloud) -> String {
    configured
        .clone()
        .or_else(|| std::env::var("AZURE_AUTHORITY_HOST").ok().filter(|h| !h.is_empty()))
        .unwrap_or_else(|| cloud.authority_host().to_string())
}

// The SDK's option structs are `#[non_exhaustive]` or carry crate-private fields, so they
// cannot be written as literals: they are built from their defaults, field by field.
#[allow(clippy::field_reassign_with_default)]
fn client_options(id: &Identity, http: Option<&reqwest::Client>) -> ClientOptions {
    let mut custom = CustomConfiguration::default();
    custom.authority_host = id.authority_host.clone();
    let mut o = ClientOptions::default();
    if let Some(http) = http {
        o.transport = Some(Transport::new(Arc::new(http.clone())));
    }
    o.cloud = Some(Arc::new(CloudConfiguration::Custom(custom)));
    o
}

fn setting(configured: &Option<String>, env: &str, what: &str, id: &Identity) -> Result<String> {
    configured.clone().or_else(|| std::env::var(env).ok()).filter(|v| !v.is_empty()).with_context(|| {
        format!("{} auth = {:?} needs the {what}: set {env} or {} in the config", id.section, id.auth, what.replace(' ', "_"))
    })
}

/// The SDK credential for `id`. `http`: the client every token request goes through (a custom
/// CA, HTTPS_PROXY); None for the SDK's own.
pub fn credential(id: &Identity, http: Option<&reqwest::Client>) -> Result<Arc<dyn TokenCredential>> {
    let auth = id.auth;
    let section = id.section;
    let sdk = |e: azure_core::Error| anyhow!("{section} auth = {auth:?}: {e}");
    Ok(match auth {
        AuthMethod::ClientSecret => {
            let tenant = setting(&id.tenant_id, "AZURE_TENANT_ID", "tenant id", id)?;
            let client = setting(&id.client_id, "AZURE_CLIENT_ID", "client id", id)?;
            let secret = setting(&id.client_secret, "AZURE_CLIENT_SECRET", "client secret", id)?;
            let o = ClientSecretCredentialOptions { client_options: client_options(id, http) };
            ClientSecretCredential::new(&tenant, client, Secret::new(secret), Some(o)).map_err(sdk)?
        }
        AuthMethod::WorkloadIdentity => {
            let tenant = setting(&id.tenant_id, "AZURE_TENANT_ID", "tenant id", id)?;
            let client = setting(&id.client_id, "AZURE_CLIENT_ID", "client id", id)?;
            let file = match &id.federated_token_file {
                Some(f) => f.clone(),
                None => PathBuf::from(setting(&None, "AZURE_FEDERATED_TOKEN_FILE", "federated token file", id)?),
            };
            if !file.exists() {
                anyhow::bail!(
                    "{section} auth = WorkloadIdentity: the federated token file {} does not exist (is the pod labelled azure.workload.identity/use: \"true\" and its service account annotated with the client id?)",
                    file.display()
                );
            }
            let o = WorkloadIdentityCredentialOptions {
                credential_options: ClientAssertionCredentialOptions { client_options: client_options(id, http) },
                tenant_id: Some(tenant),
                client_id: Some(client),
                token_file_path: Some(file),
            };
            WorkloadIdentityCredential::new(Some(o)).map_err(sdk)?
        }
        AuthMethod::ManagedIdentity => {
            let o = ManagedIdentityCredentialOptions {
                client_options: client_options(id, http),
                user_assigned_id: id.client_id.clone().map(UserAssignedId::ClientId),
            };
            ManagedIdentityCredential::new(Some(o)).map_err(sdk)?
        }
        AuthMethod::AzureCli => {
            #[allow(clippy::field_reassign_with_default)] // a crate-private field: no literal
            let o = {
                let mut o = AzureCliCredentialOptions::default();
                o.tenant_id = id.tenant_id.clone();
                o
            };
            AzureCliCredential::new(Some(o)).map_err(sdk)?
        }
    })
}
