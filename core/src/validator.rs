//! Validator sets: addresses, public keys, integer voting power, and the thresholds.
//!
//! +2/3 means strictly more than two thirds of the total power (`3 * p > 2 * total`); f+1 means
//! strictly more than one third (`3 * p > total`). Both are computed in `u128`, so no power in
//! range can overflow them.

use crate::crypto::{sha256, CryptoError, PublicKey};
use crate::limits::{MAX_TOTAL_VOTING_POWER, MAX_VALIDATORS};
use crate::types::{Address, Hash, ValidatorIndex, VotingPower};
use k256::ecdsa::VerifyingKey;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidatorSetError {
    #[error("the validator set is empty; at least one validator with power > 0 is needed")]
    Empty,
    #[error("{0} validators exceed the limit of {MAX_VALIDATORS}")]
    TooMany(usize),
    #[error("validator {0} has zero voting power; power must be at least 1")]
    ZeroPower(Address),
    #[error("validator {0} appears twice")]
    Duplicate(Address),
    #[error("total voting power exceeds {MAX_TOTAL_VOTING_POWER}")]
    PowerOverflow,
    #[error("validator key {0}: {1}")]
    BadKey(String, CryptoError),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Validator {
    pub address: Address,
    pub pub_key: PublicKey,
    pub power: VotingPower,
}

/// A change of one validator's power (0 removes it), returned by the application.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValidatorUpdate {
    pub pub_key: PublicKey,
    pub power: VotingPower,
}

/// An address-sorted, validated set. Verifying keys are decoded once, at construction. The
/// set is immutable (updates make a new one), so clones share it: every node keeps the set of
/// the last height beside the current one.
#[derive(Clone, Debug)]
pub struct ValidatorSet {
    validators: Arc<[Validator]>,
    keys: Arc<[VerifyingKey]>,
    total: u64,
    hash: Hash,
}

impl PartialEq for ValidatorSet {
    fn eq(&self, other: &Self) -> bool {
        self.validators == other.validators
    }
}
impl Eq for ValidatorSet {}

impl ValidatorSet {
    pub fn new(members: Vec<(PublicKey, VotingPower)>) -> Result<Self, ValidatorSetError> {
        if members.is_empty() {
            return Err(ValidatorSetError::Empty);
        }
        if members.len() > MAX_VALIDATORS {
            return Err(ValidatorSetError::TooMany(members.len()));
        }
        let mut validators = Vec::with_capacity(members.len());
        let mut total: u64 = 0;
        for (pk, power) in members {
            let address = pk.address();
            if power.0 == 0 {
                return Err(ValidatorSetError::ZeroPower(address));
            }
            total = total.checked_add(power.0).ok_or(ValidatorSetError::PowerOverflow)?;
            if total > MAX_TOTAL_VOTING_POWER {
                return Err(ValidatorSetError::PowerOverflow);
            }
            validators.push(Validator {
                address,
                pub_key: pk,
                power,
            });
        }
        validators.sort_by_key(|v| v.address);
        for w in validators.windows(2) {
            if w[0].address == w[1].address {
                return Err(ValidatorSetError::Duplicate(w[0].address));
            }
        }
        let keys = validators
            .iter()
            .map(|v| {
                v.pub_key
                    .verifying_key()
                    .map_err(|e| ValidatorSetError::BadKey(v.pub_key.to_string(), e))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let hash = sha256(&crate::codec::encode(&validators));
        Ok(ValidatorSet {
            validators: validators.into(),
            keys: keys.into(),
            total,
            hash,
        })
    }

    pub fn validators(&self) -> &[Validator] {
        &self.validators
    }
    pub fn len(&self) -> usize {
        self.validators.len()
    }
    pub fn is_empty(&self) -> bool {
        self.validators.is_empty()
    }
    pub fn total_power(&self) -> VotingPower {
        VotingPower(self.total)
    }
    /// Hash of the canonical encoding, as put in `Header::validators_hash`.
    pub fn hash(&self) -> Hash {
        self.hash
    }
    pub fn index_of(&self, address: &Address) -> Option<ValidatorIndex> {
        self.validators
            .binary_search_by_key(address, |v| v.address)
            .ok()
            .map(|i| ValidatorIndex(i as u16))
    }
    pub fn get(&self, index: ValidatorIndex) -> &Validator {
        &self.validators[index.0 as usize]
    }
    pub fn key(&self, index: ValidatorIndex) -> &VerifyingKey {
        &self.keys[index.0 as usize]
    }
    pub fn power_of(&self, address: &Address) -> VotingPower {
        self.index_of(address).map(|i| self.get(i).power).unwrap_or_default()
    }

    /// More than two thirds of the total power.
    pub fn is_quorum(&self, power: u64) -> bool {
        3 * (power as u128) > 2 * (self.total as u128)
    }
    /// More than one third of the total power (the paper's f+1 with n = 3f+1).
    pub fn is_one_third(&self, power: u64) -> bool {
        3 * (power as u128) > self.total as u128
    }

    /// The set after `updates` (power 0 removes; unknown key with power adds; known key changes).
    pub fn apply_updates(&self, updates: &[ValidatorUpdate]) -> Result<ValidatorSet, ValidatorSetError> {
        let mut members: std::collections::BTreeMap<Address, (PublicKey, VotingPower)> = self
            .validators
            .iter()
            .map(|v| (v.address, (v.pub_key, v.power)))
            .collect();
        for u in updates {
            let addr = u.pub_key.address();
            if u.power.0 == 0 {
                members.remove(&addr);
            } else {
                members.insert(addr, (u.pub_key, u.power));
            }
        }
        ValidatorSet::new(members.into_values().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::PrivateKey;

    fn pk(i: u32) -> PublicKey {
        PrivateKey::from_seed(&i.to_be_bytes()).public_key()
    }

    #[test]
    fn thresholds_are_strict_and_integer() {
        let vs = ValidatorSet::new((0..4).map(|i| (pk(i), VotingPower(1))).collect()).unwrap();
        assert!(!vs.is_quorum(2));
        assert!(vs.is_quorum(3));
        assert!(!vs.is_one_third(1));
        assert!(vs.is_one_third(2));
        let vs = ValidatorSet::new((0..3).map(|i| (pk(i), VotingPower(1))).collect()).unwrap();
        assert!(!vs.is_quorum(2), "exactly 2/3 is not +2/3");
        assert!(!vs.is_one_third(1), "exactly 1/3 is not f+1");
    }

    #[test]
    fn huge_powers_do_not_overflow() {
        let big = MAX_TOTAL_VOTING_POWER / 2;
        let vs = ValidatorSet::new(vec![(pk(1), VotingPower(big)), (pk(2), VotingPower(big))]).unwrap();
        assert!(vs.is_quorum(2 * big));
        assert!(!vs.is_quorum(big));
        assert_eq!(
            ValidatorSet::new(vec![(pk(1), VotingPower(u64::MAX)), (pk(2), VotingPower(1))]),
            Err(ValidatorSetError::PowerOverflow)
        );
    }

    #[test]
    fn rejects_bad_sets() {
        assert_eq!(ValidatorSet::new(vec![]), Err(ValidatorSetError::Empty));
        assert!(matches!(
            ValidatorSet::new(vec![(pk(1), VotingPower(0))]),
            Err(ValidatorSetError::ZeroPower(_))
        ));
        assert!(matches!(
            ValidatorSet::new(vec![(pk(1), VotingPower(1)), (pk(1), VotingPower(2))]),
            Err(ValidatorSetError::Duplicate(_))
        ));
    }

    #[test]
    fn sets_are_equal_when_their_members_and_powers_are_whatever_the_order_given() {
        let a = ValidatorSet::new(vec![(pk(1), VotingPower(1)), (pk(2), VotingPower(2))]).unwrap();
        let b = ValidatorSet::new(vec![(pk(2), VotingPower(2)), (pk(1), VotingPower(1))]).unwrap();
        assert_eq!(a, b);
        let other_power = ValidatorSet::new(vec![(pk(1), VotingPower(1)), (pk(2), VotingPower(3))]).unwrap();
        assert_ne!(a, other_power);
        let other_member = ValidatorSet::new(vec![(pk(1), VotingPower(1)), (pk(3), VotingPower(2))]).unwrap();
        assert_ne!(a, other_member);
        assert!(!a.is_empty() && a.len() == 2, "a set that exists has members");
    }

    #[test]
    fn updates_add_change_and_remove() {
        let vs = ValidatorSet::new(vec![(pk(1), VotingPower(1)), (pk(2), VotingPower(1))]).unwrap();
        let vs2 = vs
            .apply_updates(&[
                ValidatorUpdate {
                    pub_key: pk(3),
                    power: VotingPower(5),
                },
                ValidatorUpdate {
                    pub_key: pk(1),
                    power: VotingPower(0),
                },
            ])
            .unwrap();
        assert_eq!(vs2.len(), 2);
        assert_eq!(vs2.power_of(&pk(3).address()), VotingPower(5));
        assert_eq!(vs2.power_of(&pk(1).address()), VotingPower(0));
        assert_ne!(vs.hash(), vs2.hash());
    }
}
