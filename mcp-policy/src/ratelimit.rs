//! Rate limits: GCRA (the generic cell rate algorithm, a token bucket without a refill task), one
//! cell per key, sharded maps so concurrent callers rarely contend.

use std::{
    collections::HashMap,
    hash::{BuildHasher, RandomState},
    sync::Mutex,
    time::Duration,
};

use tokio::time::Instant;

const SHARDS: usize = 16;

/// Keys idle longer than this many emission intervals past their burst are forgotten.
const MAX_KEYS_PER_SHARD: usize = 100_000;

/// A GCRA limiter: `rate` requests per `per`, with bursts of up to `burst`.
#[derive(Debug)]
pub struct Gcra {
    /// Time between two requests at the sustained rate.
    emission: Duration,
    /// How far ahead of now the theoretical arrival time may run (burst tolerance).
    tolerance: Duration,
    shards: Vec<Mutex<HashMap<String, Instant>>>,
    hasher: RandomState,
}

impl Gcra {
    /// `rate` requests per `per` (both > 0), bursts up to `burst` (>= 1).
    pub fn new(rate: u32, per: Duration, burst: u32) -> Self {
        let emission = per / rate.max(1);
        let tolerance = emission * burst.max(1).saturating_sub(1);
        Self {
            emission,
            tolerance,
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
        }
    }

    /// Takes one cell for `key` at `now`: `Ok(())`, or `Err(wait)` until the next cell is free.
    pub fn check(&self, key: &str, now: Instant) -> Result<(), Duration> {
        let shard = &self.shards[(self.hasher.hash_one(key) as usize) % SHARDS];
        let Ok(mut map) = shard.lock() else {
            // A poisoned shard cannot happen without a panic elsewhere; refuse briefly rather
            // than let everything through.
            return Err(self.emission);
        };
        let known = map.get_mut(key);
        let tat = known.as_deref().copied().unwrap_or(now).max(now);
        let allow_at = tat.checked_sub(self.tolerance).unwrap_or(now);
        if allow_at > now {
            return Err(allow_at - now);
        }
        if let Some(t) = known {
            // A known key: update in place, no allocation.
            *t = tat + self.emission;
            return Ok(());
        }
        if map.len() >= MAX_KEYS_PER_SHARD {
            // Drop keys whose bucket is full again: they carry no state.
            map.retain(|_, t| *t > now);
        }
        map.insert(key.to_string(), tat + self.emission);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refuse_then_recover() {
        let g = Gcra::new(2, Duration::from_secs(1), 3);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(g.check("a", t0).is_ok());
        }
        let wait = g.check("a", t0).err();
        assert_eq!(wait, Some(Duration::from_millis(500)));
        // Another key is independent.
        assert!(g.check("b", t0).is_ok());
        assert!(g.check("a", t0 + Duration::from_millis(500)).is_ok());
        assert!(g.check("a", t0 + Duration::from_millis(500)).is_err());
    }
}
