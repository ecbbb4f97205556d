//! Policy's rules, pure and unit-tested: the catalog, orgs, settings and decisions.

pub mod catalog;
pub mod decision;
pub mod org;
pub mod settings;
