//! Seat choice (SPEC §4, §5): a mapped tier binds (that tier or wait, never a lower
//! one); otherwise the highest tier with a free seat; otherwise wait. A
//! [`SeatLedger`] is loaded once per transaction and kept exact as seats are taken
//! and given back, so a batch never over-allocates.

/// Which tier a person should get.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TierWish {
    /// Exactly this tier.
    Mapped(String),
    /// The highest tier with a free seat.
    HighestFree,
}

/// The outcome of asking for a seat.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SeatChoice {
    /// The product has no seat tiers (Console): active, no tier.
    NoTiers,
    /// A seat in this tier was taken.
    Seat(String),
    /// No seat: wait, for this tier (`Some`) or any (`None`).
    Pending(Option<String>),
}

/// One tier's seats.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TierSeats {
    /// The tier.
    pub tier: String,
    /// Bought; `None` is unlimited.
    pub purchased: Option<i64>,
    /// Held by active members.
    pub used: i64,
}

impl TierSeats {
    fn free(&self) -> bool {
        self.purchased.is_none_or(|p| self.used < p)
    }
}

/// Seats of every tier of one org, highest tier first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeatLedger {
    tiers: Vec<TierSeats>,
}

/// A mapped tier the product does not have.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a seat tier of this product")]
pub struct UnknownTier(pub String);

impl SeatLedger {
    /// A ledger over `tiers`, which must be in the product's order (highest first).
    pub fn new(tiers: Vec<TierSeats>) -> Self {
        Self { tiers }
    }

    /// The tiers, highest first.
    pub fn tiers(&self) -> &[TierSeats] {
        &self.tiers
    }

    /// Takes a seat as `wish` says, or says to wait.
    pub fn take(&mut self, wish: &TierWish) -> Result<SeatChoice, UnknownTier> {
        if self.tiers.is_empty() {
            return Ok(SeatChoice::NoTiers);
        }
        let index = match wish {
            TierWish::Mapped(tier) => {
                let i = self.tiers.iter().position(|t| &t.tier == tier).ok_or_else(|| UnknownTier(tier.clone()))?;
                if !self.tiers[i].free() {
                    return Ok(SeatChoice::Pending(Some(tier.clone())));
                }
                i
            }
            TierWish::HighestFree => match self.tiers.iter().position(TierSeats::free) {
                Some(i) => i,
                None => return Ok(SeatChoice::Pending(None)),
            },
        };
        self.tiers[index].used += 1;
        Ok(SeatChoice::Seat(self.tiers[index].tier.clone()))
    }

    /// Gives back a seat of `tier` (a member left it).
    pub fn release(&mut self, tier: &str) {
        if let Some(t) = self.tiers.iter_mut().find(|t| t.tier == tier) {
            t.used = (t.used - 1).max(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ledger(premium: Option<i64>, premium_used: i64, standard: Option<i64>, standard_used: i64) -> SeatLedger {
        SeatLedger::new(vec![
            TierSeats { tier: "Premium".into(), purchased: premium, used: premium_used },
            TierSeats { tier: "Standard".into(), purchased: standard, used: standard_used },
        ])
    }

    #[test]
    fn mapped_tier_binds_and_never_falls_back() {
        let mut l = ledger(Some(1), 0, None, 0);
        assert_eq!(l.take(&TierWish::Mapped("Premium".into())), Ok(SeatChoice::Seat("Premium".into())));
        assert_eq!(l.take(&TierWish::Mapped("Premium".into())), Ok(SeatChoice::Pending(Some("Premium".into()))));
    }

    #[test]
    fn highest_free_tier_otherwise() {
        let mut l = ledger(Some(1), 0, Some(1), 0);
        assert_eq!(l.take(&TierWish::HighestFree), Ok(SeatChoice::Seat("Premium".into())));
        assert_eq!(l.take(&TierWish::HighestFree), Ok(SeatChoice::Seat("Standard".into())));
        assert_eq!(l.take(&TierWish::HighestFree), Ok(SeatChoice::Pending(None)));
        l.release("Standard");
        assert_eq!(l.take(&TierWish::HighestFree), Ok(SeatChoice::Seat("Standard".into())));
    }

    #[test]
    fn unlimited_tiers_never_run_out() {
        let mut l = ledger(None, 10_000, Some(0), 0);
        for _ in 0..100 {
            assert_eq!(l.take(&TierWish::HighestFree), Ok(SeatChoice::Seat("Premium".into())));
        }
        assert_eq!(l.take(&TierWish::Mapped("Standard".into())), Ok(SeatChoice::Pending(Some("Standard".into()))));
    }

    #[test]
    fn products_without_tiers_and_unknown_tiers() {
        let mut none = SeatLedger::new(vec![]);
        assert_eq!(none.take(&TierWish::HighestFree), Ok(SeatChoice::NoTiers));
        let mut l = ledger(None, 0, None, 0);
        assert_eq!(l.take(&TierWish::Mapped("Gold".into())), Err(UnknownTier("Gold".into())));
    }

    #[test]
    fn a_full_ledger_is_never_exceeded() {
        let mut l = ledger(Some(3), 1, Some(2), 2);
        let taken = (0..10).filter(|_| matches!(l.take(&TierWish::HighestFree), Ok(SeatChoice::Seat(_)))).count();
        assert_eq!(taken, 2);
        assert!(l.tiers().iter().all(|t| t.purchased.is_none_or(|p| t.used <= p)));
    }
}
