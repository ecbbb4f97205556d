//! A complete, dialect-tolerant SCIM 2.0 server (RFC 7643, RFC 7644) for
//! push directories: Okta, Microsoft Entra ID and any other IdP that
//! provisions by SCIM. It parses and validates requests (filters, PATCH,
//! projections, ETags), bends where real IdPs bend the protocol, and serves
//! them as an axum [`Router`](axum::Router) on top of a storage trait,
//! [`DirectoryStore`], that directory-sync implements on its database. It
//! knows nothing of services; an in-memory store ([`MemoryDirectoryStore`])
//! backs its tests and benchmarks. `docs/scim.md` lists what is supported and
//! where each dialect rule comes from.

pub mod config;
pub mod error;
pub mod filter;
pub mod memory;
pub mod patch;
pub mod resource;
pub mod router;
pub mod schema;
pub mod store;

pub use config::ScimConfig;
pub use error::{ScimError, ScimType};
pub use filter::ScimFilter;
pub use memory::MemoryDirectoryStore;
pub use router::{SCIM_CONTENT_TYPE, router};
pub use store::{DirectoryStore, StoreError, TokenHash};
