//! The keys and values a workload writes and reads.
//!
//! Key `i` of a key space of `n` keys (`0 <= i < n`) is `i` in decimal,
//! zero-padded to the key size: key 42 of size 8 is `00000042`. So the keys
//! sort like their numbers, the whole key space is the range
//! `[key(0), key(n))`, and a key read back tells which it was. A key size too
//! small to hold `n - 1` is refused up front.
//!
//! Which key a request uses: with `--sequential-keys` the request's ticket
//! (its number in the run) modulo the key space, otherwise a uniform draw
//! from the client's own generator — no shared state between clients.

use crate::rng::Rng;

/// The key space: `n` keys of `size` bytes.
#[derive(Clone, Copy, Debug)]
pub struct Keys {
    pub size: usize,
    pub space: u64,
    pub sequential: bool,
}

impl Keys {
    /// Checks that `space` keys fit in `size` decimal digits.
    pub fn new(size: usize, space: u64, sequential: bool) -> anyhow::Result<Self> {
        anyhow::ensure!(space >= 1, "--key-space-size must be at least 1");
        let digits = (space - 1).checked_ilog10().map_or(1, |d| d as usize + 1);
        anyhow::ensure!(
            size >= digits,
            "--key-size {size} cannot hold {space} distinct keys (keys are zero-padded decimal \
             numbers; {digits} digits needed)"
        );
        Ok(Keys {
            size,
            space,
            sequential,
        })
    }

    /// Key number `i` (taken modulo the key space).
    pub fn key(&self, i: u64) -> Vec<u8> {
        decimal(i % self.space, self.size)
    }

    /// The exclusive end of the whole key space: `key(space)`, or the first
    /// key past every `size`-byte key when `space` fills all the digits.
    pub fn end(&self) -> Vec<u8> {
        if (self.space as u128) < 10u128.saturating_pow(self.size.min(38) as u32) {
            decimal(self.space, self.size)
        } else {
            // Every key starts with a digit: ':' sorts right after '9'.
            vec![b':']
        }
    }

    /// The key number for a request with this ticket.
    pub fn pick(&self, ticket: u64, rng: &mut Rng) -> u64 {
        if self.sequential {
            ticket % self.space
        } else {
            rng.below(self.space)
        }
    }
}

/// `i` in decimal, zero-padded to `size` digits (`i` must fit).
fn decimal(mut i: u64, size: usize) -> Vec<u8> {
    let mut k = vec![b'0'; size];
    for b in k.iter_mut().rev() {
        if i == 0 {
            break;
        }
        *b = b'0' + (i % 10) as u8;
        i /= 10;
    }
    k
}

/// A value of `size` printable pseudo-random bytes, made once per run.
pub fn value(size: usize) -> Vec<u8> {
    let mut rng = Rng(size as u64);
    (0..size).map(|_| b'a' + rng.below(26) as u8).collect()
}

/// The smallest key greater than every key starting with `prefix` (etcd's
/// `--prefix`); `\0` (everything) for an empty or all-0xff prefix.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_zero_padded_numbers_and_the_end_bounds_the_space() {
        let k = Keys::new(8, 100, true).unwrap();
        assert_eq!(k.key(0), b"00000000");
        assert_eq!(k.key(42), b"00000042");
        assert_eq!(k.key(142), b"00000042");
        assert_eq!(k.end(), b"00000100");
        let full = Keys::new(2, 100, true).unwrap();
        assert_eq!(full.key(99), b"99");
        assert!(full.end().as_slice() > b"99".as_slice());
    }

    #[test]
    fn a_key_size_too_small_for_the_key_space_is_refused() {
        assert!(Keys::new(2, 101, false).is_err());
        assert!(Keys::new(1, 10, false).is_ok());
        assert!(Keys::new(1, 1, false).is_ok());
    }

    #[test]
    fn random_picks_stay_in_the_key_space() {
        let k = Keys::new(3, 7, false).unwrap();
        let mut rng = Rng(1);
        let mut seen = [false; 7];
        for t in 0..1000 {
            seen[k.pick(t, &mut rng) as usize] = true;
        }
        assert!(seen.iter().all(|s| *s));
    }

    #[test]
    fn prefix_end_follows_etcd() {
        assert_eq!(prefix_end(b"abc"), b"abd");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b""), b"\0");
    }
}
