//! The policy service: parent organizations and organizations, the product catalog,
//! each org's provisioning settings, and the decision engine that turns what an IdP
//! says of a person into the membership they should have (SPEC §1–§4).

pub mod domain;
