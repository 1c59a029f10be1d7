//! Receiver-side statistics of the load generator: one-way latency histograms, per-stream loss
//! from an embedded sequence number, the steady-state window they are restricted to, and join
//! time. Nothing here allocates per sample.

use std::time::{Duration, Instant};

use serde::Serialize;

/// Values below `2^SUB_BITS` µs get a bucket each; every octave above gets `2^(SUB_BITS-1)`.
const SUB_BITS: u32 = 8;
const SUB_COUNT: u64 = 1 << SUB_BITS;
const HALF_SUB: u64 = SUB_COUNT / 2;
/// The largest value with its own bucket: 2^20 µs ≈ 1.05 s (anything above is overflow).
const MAX_BITS: u32 = 20;
/// Buckets: the linear part, then `MAX_BITS - SUB_BITS` octaves of `HALF_SUB` buckets each.
const BUCKETS: usize = (SUB_COUNT + (MAX_BITS - SUB_BITS) as u64 * HALF_SUB) as usize;

/// A latency histogram over fixed log-linear buckets (HDR-style): exact to 1 µs below
/// 256 µs, then 128 buckets per octave (at most 0.8% relative error) up to 2^20 µs
/// (≈1.05 s), plus an overflow count. Fixed-size (7 KiB), so recording never allocates and
/// thousands of per-stream histograms stay cheap; histograms merge by adding counts.
///
/// Count, mean, min and max are exact (nanoseconds); percentiles are the upper bound of the
/// bucket holding the nearest-rank sample, clamped to the exact maximum, so a reported
/// percentile is never below the true one and exceeds it by less than one bucket width.
#[derive(Clone, PartialEq, Eq)]
pub struct LatencyHistogram {
    buckets: Box<[u32; BUCKETS]>,
    overflow: u64,
    count: u64,
    sum_ns: u128,
    min_ns: u64,
    max_ns: u64,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for LatencyHistogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LatencyHistogram")
            .field("summary", &self.summary())
            .finish()
    }
}

/// The bucket of a value in whole microseconds, or `None` past the last bucket.
fn bucket_of(us: u64) -> Option<usize> {
    if us < SUB_COUNT {
        return Some(us as usize);
    }
    let msb = 63 - us.leading_zeros(); // >= SUB_BITS
    if msb >= MAX_BITS {
        return None;
    }
    let shift = msb - (SUB_BITS - 1);
    let sub = (us >> shift) - HALF_SUB; // 0..HALF_SUB
    Some((SUB_COUNT + u64::from(msb - SUB_BITS) * HALF_SUB + sub) as usize)
}

/// The range of microsecond values `[lo, hi]` that fall into bucket `i`.
fn bucket_range(i: usize) -> (u64, u64) {
    let i = i as u64;
    if i < SUB_COUNT {
        return (i, i);
    }
    let octave = (i - SUB_COUNT) / HALF_SUB; // msb - SUB_BITS
    let sub = (i - SUB_COUNT) % HALF_SUB;
    let shift = octave as u32 + 1;
    let lo = (HALF_SUB + sub) << shift;
    (lo, lo + (1 << shift) - 1)
}

impl LatencyHistogram {
    /// An empty histogram.
    pub fn new() -> Self {
        Self {
            buckets: Box::new([0; BUCKETS]),
            overflow: 0,
            count: 0,
            sum_ns: 0,
            min_ns: u64::MAX,
            max_ns: 0,
        }
    }

    /// Records one sample.
    pub fn record(&mut self, latency: Duration) {
        self.record_ns(u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX));
    }

    /// Records one sample given in nanoseconds.
    pub fn record_ns(&mut self, ns: u64) {
        match bucket_of(ns / 1000) {
            Some(i) => self.buckets[i] = self.buckets[i].saturating_add(1),
            None => self.overflow += 1,
        }
        self.count += 1;
        self.sum_ns += u128::from(ns);
        self.min_ns = self.min_ns.min(ns);
        self.max_ns = self.max_ns.max(ns);
    }

    /// Adds every sample of `other`.
    pub fn merge(&mut self, other: &LatencyHistogram) {
        for (a, b) in self.buckets.iter_mut().zip(other.buckets.iter()) {
            *a = a.saturating_add(*b);
        }
        self.overflow += other.overflow;
        self.count += other.count;
        self.sum_ns += other.sum_ns;
        self.min_ns = self.min_ns.min(other.min_ns);
        self.max_ns = self.max_ns.max(other.max_ns);
    }

    /// The samples recorded since `earlier`, a snapshot of this same histogram: the counts
    /// subtracted bucket by bucket. Percentiles are exact to the bucket; the minimum and
    /// maximum stay the whole history's (a percentile is clamped to that maximum).
    pub fn since(&self, earlier: &LatencyHistogram) -> LatencyHistogram {
        let mut h = self.clone();
        for (a, b) in h.buckets.iter_mut().zip(earlier.buckets.iter()) {
            *a = a.saturating_sub(*b);
        }
        h.overflow = h.overflow.saturating_sub(earlier.overflow);
        h.count = h.count.saturating_sub(earlier.count);
        h.sum_ns = h.sum_ns.saturating_sub(earlier.sum_ns);
        h
    }

    /// Number of samples.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Samples above the last bucket (≈1.05 s).
    pub fn overflow(&self) -> u64 {
        self.overflow
    }

    /// The exact mean, if any sample was recorded.
    pub fn mean(&self) -> Option<Duration> {
        let n = u128::from(self.count);
        (n > 0).then(|| Duration::from_nanos(u64::try_from(self.sum_ns / n).unwrap_or(u64::MAX)))
    }

    /// The exact minimum.
    pub fn min(&self) -> Option<Duration> {
        (self.count > 0).then(|| Duration::from_nanos(self.min_ns))
    }

    /// The exact maximum.
    pub fn max(&self) -> Option<Duration> {
        (self.count > 0).then(|| Duration::from_nanos(self.max_ns))
    }

    /// The `q`-quantile (`0.0..=1.0`, e.g. 0.99) by nearest rank: the upper bound of the
    /// bucket holding the `ceil(q·n)`-th smallest sample, clamped to the maximum.
    pub fn percentile(&self, q: f64) -> Option<Duration> {
        if self.count == 0 {
            return None;
        }
        let q = if q.is_nan() { 0.5 } else { q.clamp(0.0, 1.0) };
        let rank = ((q * self.count as f64).ceil() as u64).clamp(1, self.count);
        let mut seen = 0u64;
        for (i, &c) in self.buckets.iter().enumerate() {
            seen += u64::from(c);
            if seen >= rank {
                let (_, hi) = bucket_range(i);
                let hi_ns = hi.saturating_mul(1000).saturating_add(999);
                return Some(Duration::from_nanos(hi_ns.min(self.max_ns)));
            }
        }
        // The rank falls into the overflow: the maximum is the best bound we have.
        Some(Duration::from_nanos(self.max_ns))
    }

    /// The median.
    pub fn p50(&self) -> Option<Duration> {
        self.percentile(0.50)
    }

    /// The 99th percentile.
    pub fn p99(&self) -> Option<Duration> {
        self.percentile(0.99)
    }

    /// Count, p50, p99, max and mean, for reports.
    pub fn summary(&self) -> LatencySummary {
        let us = |d: Option<Duration>| d.map(|d| d.as_secs_f64() * 1e6);
        LatencySummary {
            count: self.count,
            p50_us: us(self.p50()),
            p99_us: us(self.p99()),
            max_us: us(self.max()),
            mean_us: us(self.mean()),
            overflow: self.overflow,
        }
    }
}

/// A histogram reduced to the figures a report prints (microseconds).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct LatencySummary {
    /// Samples.
    pub count: u64,
    /// Median.
    pub p50_us: Option<f64>,
    /// 99th percentile.
    pub p99_us: Option<f64>,
    /// Maximum.
    pub max_us: Option<f64>,
    /// Mean.
    pub mean_us: Option<f64>,
    /// Samples above ≈1.05 s.
    pub overflow: u64,
}

/// Sequence numbers remembered for duplicate detection, behind the highest one seen.
const WINDOW: u64 = 4096;
const WORDS: usize = (WINDOW / 64) as usize;
/// How far before the first packet seen a reordered packet may be and still move the start
/// back; anything older was sent before the receiver joined.
const MAX_EARLY: u64 = 64;

/// Loss of one stream from the per-source sequence number every packet carries.
///
/// Counts from the first packet received on (a receiver that subscribes late is not charged
/// with what was sent before), tolerates reordering (a packet older than the first one, if it
/// is at most 64 older, moves the start back) and duplicates (counted apart). Packets
/// more than 4096 behind the highest one seen can no longer be told from duplicates: they
/// count as `too_late` and as lost, like a jitter buffer would drop them.
///
/// `loss = 1 − unique / (max − first + 1)`.
#[derive(Clone, PartialEq, Eq)]
pub struct LossTracker {
    /// Bit `s % WINDOW` is set when sequence `s` (within the window below `max`) arrived.
    seen: [u64; WORDS],
    first: u64,
    max: u64,
    started: bool,
    unique: u64,
    duplicates: u64,
    too_late: u64,
}

impl Default for LossTracker {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for LossTracker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LossTracker")
            .field("summary", &self.summary())
            .finish()
    }
}

/// What [`LossTracker::record`] made of a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// Counted as received.
    New,
    /// Already received.
    Duplicate,
    /// Too far behind the newest packet to tell: ignored.
    TooLate,
}

impl LossTracker {
    /// A tracker that has seen nothing.
    pub fn new() -> Self {
        Self {
            seen: [0; WORDS],
            first: 0,
            max: 0,
            started: false,
            unique: 0,
            duplicates: 0,
            too_late: 0,
        }
    }

    fn bit(seq: u64) -> (usize, u64) {
        let i = seq % WINDOW;
        ((i / 64) as usize, 1u64 << (i % 64))
    }

    fn test_and_set(&mut self, seq: u64) -> bool {
        let (w, b) = Self::bit(seq);
        let was = self.seen[w] & b != 0;
        self.seen[w] |= b;
        was
    }

    fn clear(&mut self, seq: u64) {
        let (w, b) = Self::bit(seq);
        self.seen[w] &= !b;
    }

    /// Records a packet's sequence number.
    pub fn record(&mut self, seq: u64) -> Arrival {
        if !self.started {
            self.started = true;
            self.first = seq;
            self.max = seq;
            self.unique = 1;
            self.seen = [0; WORDS];
            self.test_and_set(seq);
            return Arrival::New;
        }
        if seq > self.max {
            let gap = seq - self.max;
            if gap >= WINDOW {
                self.seen = [0; WORDS];
            } else {
                for s in self.max + 1..seq {
                    self.clear(s);
                }
            }
            self.max = seq;
            self.test_and_set(seq);
            self.unique += 1;
            return Arrival::New;
        }
        if self.max - seq >= WINDOW {
            self.too_late += 1;
            return Arrival::TooLate;
        }
        if self.test_and_set(seq) {
            self.duplicates += 1;
            return Arrival::Duplicate;
        }
        if seq < self.first {
            if self.first - seq > MAX_EARLY {
                // Far older than the first packet seen: sent before this receiver joined.
                self.clear(seq);
                self.too_late += 1;
                return Arrival::TooLate;
            }
            // Sent before the first one we saw but reordered behind it: the stream started
            // earlier than we thought. Packets between seq and first are now expected too.
            self.first = seq;
        }
        self.unique += 1;
        Arrival::New
    }

    /// Distinct packets received.
    pub fn received(&self) -> u64 {
        self.unique
    }

    /// Packets expected: `max − first + 1` (0 before the first packet).
    pub fn expected(&self) -> u64 {
        if self.started {
            self.max - self.first + 1
        } else {
            0
        }
    }

    /// Packets expected but not received.
    pub fn lost(&self) -> u64 {
        self.expected().saturating_sub(self.unique)
    }

    /// Packets received more than once (extra copies).
    pub fn duplicates(&self) -> u64 {
        self.duplicates
    }

    /// Packets that arrived too far behind to count.
    pub fn too_late(&self) -> u64 {
        self.too_late
    }

    /// The lost fraction, `0.0..=1.0` (0 before the first packet).
    pub fn loss(&self) -> f64 {
        let expected = self.expected();
        if expected == 0 {
            return 0.0;
        }
        self.lost() as f64 / expected as f64
    }

    /// The first and highest sequence numbers seen.
    pub fn range(&self) -> Option<(u64, u64)> {
        self.started.then_some((self.first, self.max))
    }

    /// The figures a report prints.
    pub fn summary(&self) -> LossSummary {
        LossSummary {
            expected: self.expected(),
            received: self.unique,
            lost: self.lost(),
            duplicates: self.duplicates,
            too_late: self.too_late,
            loss: self.loss(),
        }
    }
}

/// Loss figures of one stream, or of several added together.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct LossSummary {
    /// Packets expected (from the first received on).
    pub expected: u64,
    /// Distinct packets received.
    pub received: u64,
    /// Expected but not received.
    pub lost: u64,
    /// Extra copies received.
    pub duplicates: u64,
    /// Too far behind to count.
    pub too_late: u64,
    /// `lost / expected`.
    pub loss: f64,
}

impl LossSummary {
    /// Adds another stream's figures; `loss` becomes the packet-weighted total.
    pub fn add(&mut self, other: &LossSummary) {
        self.expected += other.expected;
        self.received += other.received;
        self.lost += other.lost;
        self.duplicates += other.duplicates;
        self.too_late += other.too_late;
        self.loss = if self.expected == 0 {
            0.0
        } else {
            self.lost as f64 / self.expected as f64
        };
    }
}

/// The steady-state interval a run measures over, `[start_ns, end_ns)` in nanoseconds since
/// the process epoch ([`crate::media::process_epoch`]). Senders and receivers test a packet's
/// stamped send time against the same bounds, so both sides agree on which packets belong to
/// it; set it before it starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// First nanosecond in the window.
    pub start_ns: u64,
    /// First nanosecond after it.
    pub end_ns: u64,
}

impl Window {
    /// No window: contains nothing.
    pub const NONE: Window = Window {
        start_ns: u64::MAX,
        end_ns: u64::MAX,
    };

    /// The window `[start, end)` on the clock started at `epoch`.
    pub fn new(epoch: Instant, start: Instant, end: Instant) -> Window {
        Window {
            start_ns: crate::media::nanos_since(epoch, start),
            end_ns: crate::media::nanos_since(epoch, end),
        }
    }

    /// Whether `ns` (since the epoch) falls in it.
    pub fn contains(&self, ns: u64) -> bool {
        self.start_ns <= ns && ns < self.end_ns
    }

    /// Its length in seconds.
    pub fn secs(&self) -> f64 {
        self.end_ns.saturating_sub(self.start_ns) as f64 / 1e9
    }
}

/// What a receiver got of one stream, restricted to a [`Window`]: the packets that arrived in
/// it (throughput), and, for loss and latency, the packets *sent* in it, whenever they arrived
/// (so a packet still in flight at the window's end is not lost if it arrives later).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WindowedRx {
    /// Packets, duplicates included, that arrived within the window.
    pub arrived: u64,
    /// The packets sent within the window, by sequence number.
    pub sent_in_window: LossTracker,
    /// One-way latency of the packets sent within the window.
    pub latency: LatencyHistogram,
}

impl WindowedRx {
    /// Notes one packet: its stamp's sequence number and send time, and when it arrived
    /// (both in nanoseconds since the epoch).
    pub fn record(&mut self, window: Window, seq: u64, sent_ns: u64, arrival_ns: u64) {
        if window.contains(arrival_ns) {
            self.arrived += 1;
        }
        if window.contains(sent_ns) {
            self.sent_in_window.record(seq);
            if let Some(ns) = arrival_ns.checked_sub(sent_ns) {
                self.latency.record_ns(ns);
            }
        }
    }

    /// Loss of the packets sent within the window. `sent`: how many the sender sent in it
    /// (then a packet lost at either edge of the window counts too); `None`: counted from
    /// the first of them received to the last.
    pub fn loss(&self, sent: Option<u64>) -> LossSummary {
        let t = &self.sent_in_window;
        let Some(expected) = sent else {
            return t.summary();
        };
        let received = t.received().min(expected);
        let lost = expected - received;
        LossSummary {
            expected,
            received,
            lost,
            duplicates: t.duplicates(),
            too_late: t.too_late(),
            loss: if expected == 0 {
                0.0
            } else {
                lost as f64 / expected as f64
            },
        }
    }
}

/// Join time of a participant: from when it started connecting to its first media packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JoinTimer {
    started: Instant,
    first_media: Option<Instant>,
}

impl JoinTimer {
    /// Starts timing at `started` (when the participant began connecting).
    pub fn new(started: Instant) -> Self {
        Self {
            started,
            first_media: None,
        }
    }

    /// Notes a media packet received at `at`; only the first one counts.
    pub fn media(&mut self, at: Instant) {
        if self.first_media.is_none() {
            self.first_media = Some(at);
        }
    }

    /// When timing started.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// When the first media packet arrived.
    pub fn first_media(&self) -> Option<Instant> {
        self.first_media
    }

    /// Connect → first media packet, once media arrived.
    pub fn join_time(&self) -> Option<Duration> {
        self.first_media
            .map(|t| t.saturating_duration_since(self.started))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small deterministic generator (xorshift64*), so tests need no dependency.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    fn exact_percentile(sorted: &[u64], q: f64) -> u64 {
        let n = sorted.len() as u64;
        let rank = ((q * n as f64).ceil() as u64).clamp(1, n);
        sorted[(rank - 1) as usize]
    }

    #[test]
    fn buckets_cover_every_value_once_in_order() {
        let mut prev_hi = None;
        for i in 0..BUCKETS {
            let (lo, hi) = bucket_range(i);
            assert!(lo <= hi);
            if let Some(p) = prev_hi {
                assert_eq!(lo, p + 1, "bucket {i} does not follow on");
            }
            assert_eq!(bucket_of(lo), Some(i));
            assert_eq!(bucket_of(hi), Some(i));
            // Relative width stays under 1/128 above the linear part.
            if lo >= SUB_COUNT {
                assert!((hi - lo + 1) * 128 <= lo, "bucket {i} too wide: {lo}..{hi}");
            }
            prev_hi = Some(hi);
        }
        assert_eq!(prev_hi, Some((1 << MAX_BITS) - 1));
        assert_eq!(bucket_of(1 << MAX_BITS), None);
        assert_eq!(bucket_of(u64::MAX), None);
    }

    #[test]
    fn empty_histogram_has_no_figures() {
        let h = LatencyHistogram::new();
        assert_eq!(h.count(), 0);
        assert_eq!(h.p50(), None);
        assert_eq!(h.mean(), None);
        assert_eq!(h.max(), None);
        assert_eq!(h.summary().count, 0);
    }

    #[test]
    fn exact_figures_of_a_few_samples() {
        let mut h = LatencyHistogram::new();
        for us in [100u64, 200, 300] {
            h.record(Duration::from_micros(us));
        }
        assert_eq!(h.count(), 3);
        assert_eq!(h.mean(), Some(Duration::from_micros(200)));
        assert_eq!(h.min(), Some(Duration::from_micros(100)));
        assert_eq!(h.max(), Some(Duration::from_micros(300)));
        // 200 µs is in the exact range: its bucket is [200, 200] µs.
        assert_eq!(h.p50(), Some(Duration::from_nanos(200_999)));
        // p99 is the largest sample, clamped to the exact maximum.
        assert_eq!(h.p99(), Some(Duration::from_micros(300)));
        assert_eq!(h.percentile(0.0), Some(Duration::from_nanos(100_999)));
    }

    fn check_against_sorted(samples: &[u64]) {
        let mut h = LatencyHistogram::new();
        for &s in samples {
            h.record_ns(s);
        }
        let mut sorted = samples.to_vec();
        sorted.sort_unstable();
        for q in [0.0, 0.01, 0.25, 0.5, 0.9, 0.99, 0.999, 1.0] {
            let exact = exact_percentile(&sorted, q);
            let got = u64::try_from(h.percentile(q).expect("samples").as_nanos()).expect("fits");
            assert!(got >= exact, "q={q}: {got} < exact {exact}");
            // Within one bucket: 1 µs below 256 µs, else 1/128 of the value.
            let width_ns = ((exact / 1000) / 128).max(1) * 1000 + 1000;
            assert!(
                got - exact < width_ns,
                "q={q}: {got} too far above exact {exact}"
            );
        }
        assert_eq!(h.max(), sorted.last().map(|&v| Duration::from_nanos(v)));
        let mean = samples.iter().map(|&s| u128::from(s)).sum::<u128>() / samples.len() as u128;
        assert_eq!(h.mean(), Some(Duration::from_nanos(mean as u64)));
    }

    #[test]
    fn percentiles_match_a_sorted_reference() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        // Uniform over 0..2 ms.
        let uniform: Vec<u64> = (0..10_000).map(|_| rng.below(2_000_000)).collect();
        check_against_sorted(&uniform);
        // Heavy tail: mostly ~100 µs, some up to 900 ms.
        let tail: Vec<u64> = (0..20_000)
            .map(|_| {
                if rng.below(100) == 0 {
                    rng.below(900_000_000)
                } else {
                    50_000 + rng.below(100_000)
                }
            })
            .collect();
        check_against_sorted(&tail);
        // A single sample and identical samples.
        check_against_sorted(&[123_456]);
        check_against_sorted(&[5_000_000; 100]);
    }

    #[test]
    fn since_keeps_only_the_later_samples() {
        let mut h = LatencyHistogram::new();
        h.record_ns(1_000_000);
        let before = h.clone();
        h.record_ns(50_000_000);
        h.record_ns(50_000_000);
        let later = h.since(&before);
        assert_eq!(later.count(), 2);
        let p50 = later.p50().unwrap().as_secs_f64();
        assert!((0.049..=0.051).contains(&p50), "{p50}");
    }

    #[test]
    fn overflow_is_counted_and_bounded_by_max() {
        let mut h = LatencyHistogram::new();
        h.record(Duration::from_millis(1));
        h.record(Duration::from_secs(2));
        h.record(Duration::from_secs(3));
        assert_eq!(h.overflow(), 2);
        assert_eq!(h.count(), 3);
        assert_eq!(h.p99(), Some(Duration::from_secs(3)));
        assert_eq!(h.max(), Some(Duration::from_secs(3)));
    }

    #[test]
    fn merged_histogram_equals_one_fed_everything() {
        let mut rng = Rng(42);
        let mut all = LatencyHistogram::new();
        let mut a = LatencyHistogram::new();
        let mut b = LatencyHistogram::new();
        for i in 0..5000 {
            let v = rng.below(50_000_000);
            all.record_ns(v);
            if i % 3 == 0 {
                a.record_ns(v);
            } else {
                b.record_ns(v);
            }
        }
        a.merge(&b);
        assert_eq!(a, all);
        // Merging an empty one changes nothing.
        a.merge(&LatencyHistogram::new());
        assert_eq!(a, all);
    }

    #[test]
    fn loss_of_a_clean_stream_is_zero() {
        let mut l = LossTracker::new();
        assert_eq!(l.loss(), 0.0);
        assert_eq!(l.range(), None);
        for s in 100..200 {
            assert_eq!(l.record(s), Arrival::New);
        }
        assert_eq!(l.expected(), 100);
        assert_eq!(l.received(), 100);
        assert_eq!(l.lost(), 0);
        assert_eq!(l.loss(), 0.0);
        assert_eq!(l.range(), Some((100, 199)));
    }

    #[test]
    fn loss_counts_gaps_from_the_first_packet_received() {
        let mut l = LossTracker::new();
        // A late subscriber: the stream was at 1000 already; that is not loss.
        for s in (1000..1100).filter(|s| s % 10 != 3) {
            l.record(s);
        }
        assert_eq!(l.expected(), 100);
        assert_eq!(l.lost(), 10);
        assert!((l.loss() - 0.10).abs() < 1e-12);
        // A long gap (an outage longer than the window).
        l.record(20_000);
        assert_eq!(l.expected(), 20_000 - 1000 + 1);
        assert_eq!(l.received(), 91);
    }

    #[test]
    fn reordering_is_not_loss() {
        let mut l = LossTracker::new();
        let order = [0u64, 2, 1, 5, 3, 4, 9, 8, 7, 6];
        for s in order {
            assert_eq!(l.record(s), Arrival::New);
        }
        assert_eq!(l.lost(), 0);
        assert_eq!(l.duplicates(), 0);
        // A packet sent before the first received one, overtaken by it.
        let mut l = LossTracker::new();
        for s in [10u64, 11, 9, 12, 8] {
            l.record(s);
        }
        assert_eq!(l.range(), Some((8, 12)));
        assert_eq!(l.lost(), 0);
        // Reordered with a real gap left behind.
        let mut l = LossTracker::new();
        for s in [10u64, 12, 8] {
            l.record(s);
        }
        assert_eq!(l.expected(), 5);
        assert_eq!(l.lost(), 2);
        // Much older than the first packet: sent before the receiver joined, not counted.
        let mut l = LossTracker::new();
        l.record(1000);
        assert_eq!(l.record(1000 - MAX_EARLY - 1), Arrival::TooLate);
        assert_eq!(l.expected(), 1);
        assert_eq!(l.record(1000 - MAX_EARLY), Arrival::New);
        assert_eq!(l.expected(), 1 + MAX_EARLY);
        assert_eq!(l.record(1000 - MAX_EARLY), Arrival::Duplicate);
    }

    #[test]
    fn duplicates_are_counted_apart() {
        let mut l = LossTracker::new();
        for s in 0..50 {
            l.record(s);
        }
        assert_eq!(l.record(49), Arrival::Duplicate);
        assert_eq!(l.record(10), Arrival::Duplicate);
        assert_eq!(l.record(0), Arrival::Duplicate);
        assert_eq!(l.duplicates(), 3);
        assert_eq!(l.received(), 50);
        assert_eq!(l.lost(), 0);
        // A duplicate of a packet that filled a gap.
        l.record(52);
        assert_eq!(l.record(51), Arrival::New);
        assert_eq!(l.record(51), Arrival::Duplicate);
        assert_eq!(l.lost(), 1);
    }

    #[test]
    fn window_slides_and_forgets_old_packets() {
        let mut l = LossTracker::new();
        l.record(0);
        l.record(WINDOW + 10);
        // Sequence 5 is behind the window now: it cannot be told from a duplicate.
        assert_eq!(l.record(5), Arrival::TooLate);
        assert_eq!(l.too_late(), 1);
        // Within the window, a missing one is still accepted once.
        assert_eq!(l.record(WINDOW), Arrival::New);
        assert_eq!(l.record(WINDOW), Arrival::Duplicate);
        // Slot reuse: after advancing, an old bit for the same slot must not look seen.
        let mut l = LossTracker::new();
        for s in 0..3 * WINDOW {
            if s % 7 != 0 {
                l.record(s);
            }
        }
        let lost = (0..3 * WINDOW).filter(|s| s % 7 == 0).count() as u64;
        // Seq 0 was never received, so the stream starts at 1.
        assert_eq!(l.lost(), lost - 1);
        assert_eq!(l.duplicates(), 0);
    }

    #[test]
    fn loss_against_a_reference_under_random_reorder_and_duplication() {
        let mut rng = Rng(7);
        let mut l = LossTracker::new();
        let mut delivered = Vec::new();
        for s in 0..20_000u64 {
            if rng.below(100) < 3 {
                continue; // dropped
            }
            delivered.push(s);
            if rng.below(100) < 2 {
                delivered.push(s); // duplicated
            }
        }
        // Local reordering: swap neighbours within a short distance.
        for i in 0..delivered.len() {
            let j = (i + rng.below(20) as usize).min(delivered.len() - 1);
            delivered.swap(i, j);
        }
        let mut unique: Vec<u64> = delivered.clone();
        unique.sort_unstable();
        unique.dedup();
        for &s in &delivered {
            l.record(s);
        }
        let first = *unique.first().expect("some");
        let max = *unique.last().expect("some");
        assert_eq!(l.range(), Some((first, max)));
        assert_eq!(l.received(), unique.len() as u64);
        assert_eq!(l.duplicates(), (delivered.len() - unique.len()) as u64);
        let expected_loss = 1.0 - unique.len() as f64 / (max - first + 1) as f64;
        assert!((l.loss() - expected_loss).abs() < 1e-12);
    }

    #[test]
    fn loss_summaries_add_up() {
        let mut a = LossTracker::new();
        let mut b = LossTracker::new();
        for s in [0u64, 1, 3] {
            a.record(s);
        }
        for s in 0..6u64 {
            b.record(s);
        }
        let mut total = a.summary();
        total.add(&b.summary());
        assert_eq!(total.expected, 10);
        assert_eq!(total.lost, 1);
        assert!((total.loss - 0.1).abs() < 1e-12);
    }

    #[test]
    fn window_is_half_open() {
        let w = Window {
            start_ns: 1_000,
            end_ns: 2_000,
        };
        assert!(!w.contains(999));
        assert!(w.contains(1_000));
        assert!(w.contains(1_999));
        assert!(!w.contains(2_000));
        assert!(!Window::NONE.contains(0));
        assert!(!Window::NONE.contains(u64::MAX - 1));
        let t0 = Instant::now();
        let w = Window::new(
            t0,
            t0 + Duration::from_secs(3),
            t0 + Duration::from_secs(13),
        );
        assert_eq!(w.start_ns, 3_000_000_000);
        assert!((w.secs() - 10.0).abs() < 1e-12);
    }

    /// A stream at one packet per ms, sequence = send time in ms, each arriving 2 ms later;
    /// the window is [100 ms, 200 ms).
    fn stream_through_window(lost: impl Fn(u64) -> bool) -> WindowedRx {
        const MS: u64 = 1_000_000;
        let window = Window {
            start_ns: 100 * MS,
            end_ns: 200 * MS,
        };
        let mut rx = WindowedRx::default();
        for seq in 0..300u64 {
            if !lost(seq) {
                rx.record(window, seq, seq * MS, (seq + 2) * MS);
            }
        }
        rx
    }

    #[test]
    fn windowed_stream_counts_only_what_the_window_holds() {
        let rx = stream_through_window(|_| false);
        // Arrived in the window: sent at 98..198 ms.
        assert_eq!(rx.arrived, 100);
        // Sent in it: 100..200 ms, the last two arriving after the window closed.
        assert_eq!(rx.sent_in_window.received(), 100);
        assert_eq!(rx.latency.count(), 100);
        assert_eq!(rx.latency.max(), Some(Duration::from_millis(2)));
        assert_eq!(rx.loss(Some(100)).lost, 0);
        assert_eq!(rx.loss(None).expected, 100);
    }

    #[test]
    fn windowed_loss_ignores_the_join_phase_and_counts_the_edges() {
        // Heavy loss before the window (a join), none after it: the window sees none of it.
        let rx = stream_through_window(|seq| seq < 100 && seq % 2 == 0);
        assert_eq!(rx.loss(Some(100)).lost, 0);
        // The window's first and last packets lost: counted against what the sender sent,
        // invisible from the receiver's own first..last.
        let rx = stream_through_window(|seq| seq == 100 || seq == 199 || seq == 150);
        let against_sender = rx.loss(Some(100));
        assert_eq!(against_sender.expected, 100);
        assert_eq!(against_sender.lost, 3);
        assert!((against_sender.loss - 0.03).abs() < 1e-12);
        let receiver_only = rx.loss(None);
        assert_eq!(receiver_only.expected, 98);
        assert_eq!(receiver_only.lost, 1);
        // Nothing arrived in the window at all: all of it is lost.
        let rx = stream_through_window(|seq| (100..200).contains(&seq));
        assert_eq!(rx.loss(Some(100)).lost, 100);
        assert_eq!(rx.loss(Some(100)).loss, 1.0);
        assert_eq!(rx.latency.count(), 0);
    }

    #[test]
    fn windowed_duplicates_are_not_received_twice() {
        const MS: u64 = 1_000_000;
        let window = Window {
            start_ns: 0,
            end_ns: 10 * MS,
        };
        let mut rx = WindowedRx::default();
        for seq in [0u64, 1, 1, 2, 3, 3, 3] {
            rx.record(window, seq, seq * MS, seq * MS + 1);
        }
        assert_eq!(rx.arrived, 7);
        let l = rx.loss(Some(4));
        assert_eq!((l.received, l.lost, l.duplicates), (4, 0, 3));
        // More received than the sender says it sent (it cannot happen): never negative.
        assert_eq!(rx.loss(Some(2)).lost, 0);
    }

    #[test]
    fn join_time_is_start_to_first_media() {
        let t0 = Instant::now();
        let mut j = JoinTimer::new(t0);
        assert_eq!(j.join_time(), None);
        j.media(t0 + Duration::from_millis(250));
        j.media(t0 + Duration::from_millis(300));
        assert_eq!(j.join_time(), Some(Duration::from_millis(250)));
        assert_eq!(j.first_media(), Some(t0 + Duration::from_millis(250)));
    }
}
