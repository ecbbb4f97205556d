//! Directory-sync's rules, pure and unit-tested: directories and their settings, the
//! mass-removal brake, what a parent's directories say of a person together
//! (evidence), runs and their counts, what the mirror tells policy, and the SCIM
//! request log's redaction and caps.

pub mod brake;
pub mod directory;
pub mod evidence;
pub mod mirror;
pub mod pull;
pub mod run;
pub mod scim_log;
