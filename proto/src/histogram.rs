//! Latency histograms on the wire: HDR histograms (hdrhistogram) in the V2 compressed (deflate)
//! encoding, the format sidecars report in and the control plane merges. Both planes use these
//! functions, so what one encodes the other decodes.

use hdrhistogram::serialization::{Deserializer, Serializer, V2DeflateSerializer};
use hdrhistogram::{Counter, Histogram};

/// Values are microseconds, 1 µs to 10 min, two significant digits — the sidecar's own bounds.
pub const HIGHEST_US: u64 = 600_000_000;

/// An empty histogram with the shared bounds, of any counter width (sidecars count in `u32`, the
/// fleet view in `u64`).
pub fn new<T: Counter>() -> Histogram<T> {
    // Constant bounds inside hdrhistogram's valid range.
    Histogram::new_with_bounds(1, HIGHEST_US, 2).expect("valid histogram bounds")
}

/// A histogram whose counts (≈12 KB at these bounds) are allocated on its first value: an
/// endpoint that sees no traffic — most backups, most of the time — holds none.
#[derive(Debug, Clone, Default)]
pub struct Lazy<T: Counter>(Option<Histogram<T>>);

impl<T: Counter> Lazy<T> {
    /// Records `us` microseconds (see [`micros`]), allocating the counts if need be.
    pub fn record(&mut self, us: u64) {
        self.0.get_or_insert_with(new).saturating_record(us);
    }

    /// The histogram, if it holds any value.
    pub fn get(&self) -> Option<&Histogram<T>> {
        self.0.as_ref().filter(|h| !h.is_empty())
    }

    pub fn len(&self) -> u64 {
        self.0.as_ref().map_or(0, Histogram::len)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The sum of two (same bounds: adding cannot fail), if either holds a value.
    pub fn merged(&self, other: &Lazy<T>) -> Option<Histogram<T>> {
        match (self.get(), other.get()) {
            (Some(a), Some(b)) => {
                let mut m = a.clone();
                let _ = m.add(b);
                Some(m)
            }
            (Some(h), None) | (None, Some(h)) => Some(h.clone()),
            (None, None) => None,
        }
    }
}

/// A duration as the value histograms record: microseconds, clamped into the shared bounds.
pub fn micros(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(HIGHEST_US).clamp(1, HIGHEST_US)
}

/// Encodes a histogram of any counter width (sidecars count in `u32`, the fleet view in `u64`).
pub fn encode<T: Counter>(h: &Histogram<T>) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    V2DeflateSerializer::new().serialize(h, &mut out).map_err(|e| format!("cannot encode a histogram: {e:?}"))?;
    Ok(out)
}

pub fn decode(bytes: &[u8]) -> Result<Histogram<u64>, String> {
    Decoder::default().decode(bytes)
}

/// Decodes many histograms reusing one scratch buffer: the control plane decodes hundreds of
/// thousands per report round.
#[derive(Default)]
pub struct Decoder(Deserializer);

impl Decoder {
    pub fn decode(&mut self, bytes: &[u8]) -> Result<Histogram<u64>, String> {
        self.0.deserialize(&mut &bytes[..]).map_err(|e| format!("not a V2 histogram: {e:?}"))
    }
}

/// Adds an encoded histogram into `into` (a fleet view merging many sidecars' reports).
pub fn merge(into: &mut Histogram<u64>, bytes: &[u8]) -> Result<(), String> {
    let h = decode(bytes)?;
    into.add(&h).map_err(|e| format!("cannot merge histograms: {e:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merged_reports_equal_one_process_that_saw_everything() {
        fastrand::seed(7);
        let mut reference: Histogram<u64> = new();
        let mut fleet: Histogram<u64> = new();
        for _sidecar in 0..20 {
            let mut local: Histogram<u64> = new();
            for _ in 0..5_000 {
                // Mostly fast, a long tail of slow first tokens.
                let us = if fastrand::u8(..) < 240 {
                    fastrand::u64(50_000..400_000)
                } else {
                    fastrand::u64(1_000_000..5_000_000)
                };
                local.record(us).unwrap();
                reference.record(us).unwrap();
            }
            let wire = encode(&local).unwrap();
            assert!(wire.len() < 8 * 1024, "compressed: {} bytes", wire.len());
            merge(&mut fleet, &wire).unwrap();
        }
        assert_eq!(fleet.len(), reference.len());
        for q in [0.5, 0.9, 0.99, 0.999] {
            assert_eq!(fleet.value_at_quantile(q), reference.value_at_quantile(q), "p{}", q * 100.0);
        }
        assert_eq!((fleet.min(), fleet.max()), (reference.min(), reference.max()));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(decode(b"not a histogram").is_err());
        assert!(merge(&mut new(), &[0x1c, 0x84, 0x93, 0x14, 0, 0, 0, 5]).is_err());
    }
}
