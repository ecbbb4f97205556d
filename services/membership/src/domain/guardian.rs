//! The guardian guard (SPEC §7): no change may leave an org without an active member
//! in the guardian role (Owner on Claude products, Admin on Console).

/// A change to one member, as the guard sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuardedChange<'a> {
    /// The member leaves.
    Remove,
    /// The member's role becomes this.
    Role(&'a str),
}

/// Whether a change may go ahead. `member_role` and `member_active` describe the
/// member before the change; `active_guardians` counts the org's active members in
/// the guardian role, this one included.
pub fn allows(
    guardian_role: &str,
    member_role: &str,
    member_active: bool,
    active_guardians: i64,
    change: GuardedChange<'_>,
) -> bool {
    let is_guardian = member_active && member_role == guardian_role;
    let stays_guardian = matches!(change, GuardedChange::Role(r) if r == guardian_role);
    !is_guardian || stays_guardian || active_guardians > 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_guardian_cannot_leave_or_be_demoted() {
        assert!(!allows("Owner", "Owner", true, 1, GuardedChange::Remove));
        assert!(!allows("Owner", "Owner", true, 1, GuardedChange::Role("Admin")));
        assert!(allows("Owner", "Owner", true, 1, GuardedChange::Role("Owner")));
    }

    #[test]
    fn another_guardian_makes_it_safe() {
        assert!(allows("Owner", "Owner", true, 2, GuardedChange::Remove));
        assert!(allows("Admin", "Admin", true, 2, GuardedChange::Role("Developer")));
    }

    #[test]
    fn non_guardians_and_pending_members_are_free_to_change() {
        assert!(allows("Owner", "User", true, 1, GuardedChange::Remove));
        assert!(allows("Owner", "Owner", false, 0, GuardedChange::Remove), "a pending Owner holds no seat");
        assert!(allows("Owner", "Admin", true, 0, GuardedChange::Remove), "an org with no guardian yet");
    }
}
