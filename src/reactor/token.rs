//! Generation tokens: how a readiness event or a timer names a connection
//! without ever naming its successor.
//!
//! A slab hands a freed key straight back to the next connection, while an
//! event for the old one may still sit in the current batch of `epoll`
//! results, or a timer may still be filed for it. A token therefore packs
//! the slab key (low 32 bits) with a generation (high 32 bits) that is
//! bumped for every new connection; a token whose generation does not match
//! the slab entry is stale and ignored. nginx does the same with its
//! `instance` bit. Keys never pass [`MAX_KEY`], so the largest token is
//! `usize::MAX - 15` and the values above it are free for fixed sources
//! (listeners, the waker, the signal pipe).
//! The gateway and `tether-load` both name their connections this way.

use mio::Token;

const _: () = assert!(usize::BITS == 64, "tokens pack a 32-bit key and a 32-bit generation");

/// The largest slab key a token may carry (see the module documentation).
pub const MAX_KEY: usize = 0xFFFF_FFF0;

/// The token of the connection in slab slot `key` with `generation`.
pub fn pack(key: usize, generation: u32) -> Token {
    debug_assert!(key <= MAX_KEY, "slab keys stay below the fixed tokens");
    Token(key | (generation as usize) << 32)
}

/// The slab key and generation a token carries.
pub fn unpack(token: Token) -> (usize, u32) {
    (token.0 & 0xFFFF_FFFF, (token.0 >> 32) as u32)
}

/// Hands out generations: one per connection, wrapping after 2^32 (by
/// then no event or timer for the first holder of a key is in flight).
#[derive(Debug, Default, Clone)]
pub struct Generations {
    last: u32,
}

impl Generations {
    pub fn take(&mut self) -> u32 {
        self.last = self.last.wrapping_add(1);
        self.last
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_round_trips_and_generations_tell_holders_apart() {
        let mut generations = Generations::default();
        let first = pack(7, generations.take());
        let second = pack(7, generations.take());
        assert_ne!(first, second, "the same slot, another connection");
        assert_eq!(unpack(first), (7, 1));
        assert_eq!(unpack(second), (7, 2));
        assert_eq!(unpack(pack(MAX_KEY, u32::MAX)), (MAX_KEY, u32::MAX));
        assert!(pack(MAX_KEY, u32::MAX).0 < usize::MAX - 3, "fixed tokens stay free");
    }
}
