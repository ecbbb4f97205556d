//! Directory-sync's rules, pure and unit-tested: directories and their settings, the
//! mass-removal brake, runs and their counts, and what the mirror tells policy.

pub mod brake;
pub mod directory;
pub mod mirror;
pub mod pull;
pub mod run;
