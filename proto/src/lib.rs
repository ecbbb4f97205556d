//! Muster's gRPC contracts. The `.proto` files under `proto/muster` are the source of
//! truth; this crate compiles them (without a system `protoc`) into prost messages and
//! tonic clients and servers, and exports the encoded descriptor set so every service
//! can serve reflection.

#![allow(clippy::doc_lazy_continuation, clippy::large_enum_variant)]

/// Encoded `FileDescriptorSet` of every Muster proto, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/muster_descriptor.bin"));

/// Shared types (`muster.common.v1`).
pub mod common {
    /// Version 1.
    pub mod v1 {
        tonic::include_proto!("muster.common.v1");
    }
}

/// Organizations, catalog, settings and decisions (`muster.policy.v1`).
pub mod policy {
    /// Version 1.
    pub mod v1 {
        tonic::include_proto!("muster.policy.v1");
    }
}

/// Members, seats, logins, audit and events (`muster.membership.v1`).
pub mod membership {
    /// Version 1.
    pub mod v1 {
        tonic::include_proto!("muster.membership.v1");
    }
}

/// Directories, mirror, sync runs, previews and directory events (`muster.directory.v1`).
pub mod directory {
    /// Version 1.
    pub mod v1 {
        tonic::include_proto!("muster.directory.v1");
    }
}
