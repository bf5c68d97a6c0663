//! Local stand-ins for the cloud services Crowsnest talks to, for the tests and the bench: they
//! speak the real wire protocol and refuse what the service refuses, in-process, with no cloud.

pub mod azurite;
pub mod eventhubs;
pub mod logs_ingestion;
pub mod pki;
pub mod serve;
