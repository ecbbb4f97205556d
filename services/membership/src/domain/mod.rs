//! Membership's rules, pure and unit-tested: members, seat choice, the guardian guard.

pub mod guardian;
pub mod member;
pub mod seats;
