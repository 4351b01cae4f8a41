//! Per-collar pseudo-randomness, derived from the collar's index.
//!
//! A collar needs a few numbers that look random but must not be stored:
//! where its periodic `PING` and `LOCATION` fall within their interval (so
//! that 19,000 collars do not all fire in the same millisecond), and where
//! on Earth it lives. Hashing the collar's global index gives each collar
//! its own values with no generator state, the same in every run and in
//! whichever worker process holds the collar.

/// Salts, so that each use of the hash gets independent values.
pub const PING_PHASE: u64 = 0x5049_4e47;
pub const REPORT_PHASE: u64 = 0x5245_504f;
const HOME_LAT: u64 = 0x4c41_5400;
const HOME_LON: u64 = 0x4c4f_4e00;
const WALK_LAT: u64 = 0x574c_4154;
const WALK_LON: u64 = 0x574c_4f4e;

/// How far (in degrees) a collar wanders from home between reports: about
/// ±500 m, a pet in its neighbourhood.
const WANDER: f64 = 0.01;

/// SplitMix64's finalizer: a bijection on `u64` that spreads every input bit.
pub fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// A value in `[0, bound)` for `index` (0 when `bound` is 0).
pub fn below(index: u64, salt: u64, bound: u64) -> u64 {
    if bound == 0 { 0 } else { mix(mix(index) ^ salt) % bound }
}

/// A value in `[0, 1)` for `index`.
fn unit(index: u64, salt: u64) -> f64 {
    (mix(mix(index) ^ salt) >> 11) as f64 / (1u64 << 53) as f64
}

/// Where collar `index` is at its `step`th report: a home between 55°S and
/// 70°N anywhere in longitude, plus a small wander. Always a valid
/// position (latitude within ±90, longitude within ±180).
pub fn position(index: u64, step: u64) -> (f64, f64) {
    let home_lat = -55.0 + 125.0 * unit(index, HOME_LAT);
    let home_lon = -180.0 + 360.0 * unit(index, HOME_LON);
    let walk = mix(index) ^ mix(step);
    let lat = home_lat + WANDER * (unit(walk, WALK_LAT) - 0.5);
    let lon = home_lon + WANDER * (unit(walk, WALK_LON) - 0.5);
    (lat.clamp(-90.0, 90.0), lon.clamp(-180.0, 180.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn below_stays_in_range_and_spreads() {
        let mut seen = [0u32; 10];
        for i in 0..10_000 {
            let v = below(i, PING_PHASE, 10);
            seen[v as usize] += 1;
        }
        // Roughly uniform: each tenth gets 1000 ± a few hundred.
        assert!(seen.iter().all(|&n| (700..1300).contains(&n)), "{seen:?}");
        assert_eq!(below(7, PING_PHASE, 0), 0);
        assert_ne!(below(7, PING_PHASE, 1 << 40), below(7, REPORT_PHASE, 1 << 40), "salts differ");
    }

    #[test]
    fn positions_are_valid_and_near_home() {
        for index in 0..5_000 {
            let (lat0, lon0) = position(index, 0);
            for step in 1..5 {
                let (lat, lon) = position(index, step);
                assert!((-90.0..=90.0).contains(&lat) && (-180.0..=180.0).contains(&lon));
                assert!((lat - lat0).abs() <= WANDER && (lon - lon0).abs() <= WANDER);
            }
        }
        assert_eq!(position(42, 3), position(42, 3), "deterministic");
    }
}
