//! The guard: takes a failing canary out of the split within seconds, in the data plane.
//!
//! Each worker counts the responses to *judged* requests (those the filter sent by sticky or
//! random choice, never pins) per release in a sliding window of 1 s slots. A tick on every
//! worker merges its counts into one state per route that all workers share (the host's shared
//! data, as the compact bytes of [`SharedState`]), judges the merged window with [`judge`], and
//! reads the verdict back. Everything here is plain Rust: the glue (`guard_host`) only moves
//! bytes between this and the host.
//!
//! The trip rule, the same thresholds as `canary-split rollout` and the `CanaryHigherErrorRate`
//! alert, made safe for a window of seconds by a 99 % one-sided confidence:
//! - the canary has at least `min_requests` judged requests in the window;
//! - the Wilson score lower bound of its error ratio is above `error_ratio_floor`;
//! - and, while primary has at least `min_requests` too, a one-sided two-proportion z-test
//!   (unpooled) finds the canary's error ratio above primary's × (1 + `max_error_increase`/100).
//!
//! The optional latency rule asks the same of the share of canary requests slower than
//! primary's p95 × (1 + `max_latency_increase`/100) (and than `latency_floor_ms`): the canary's
//! p95 is above that time exactly when more than 5 % of its requests are slower, and the Wilson
//! lower bound of that share must clear 5 %.

use std::fmt;
use std::hash::{Hash, Hasher};

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer};
use sha2::{Digest, Sha256};

use crate::config::{Config, Object, Route, Variant};
use crate::decision::Reason;

/// The z of a 99 % one-sided test: Φ⁻¹(0.99).
pub const Z_99: f64 = 2.326_347_874_040_841;

pub const DEFAULT_WINDOW_SECONDS: u16 = 10;
pub const DEFAULT_MIN_REQUESTS: u32 = 20;
pub const DEFAULT_MAX_ERROR_INCREASE: f64 = 50.0;
pub const DEFAULT_ERROR_RATIO_FLOOR: f64 = 1.0;
pub const MAX_WINDOW_SECONDS: u16 = 300;

/// Upper bounds (exclusive) of the latency buckets, in milliseconds; the last bucket has none.
/// Coarse on purpose: 20 counters per release and second are what the workers share.
pub const LATENCY_BOUNDS_MS: [u32; 19] = [
    5, 10, 20, 30, 50, 75, 100, 150, 200, 300, 500, 750, 1_000, 1_500, 2_000, 3_000, 5_000, 10_000, 30_000,
];
pub const LATENCY_BUCKETS: usize = LATENCY_BOUNDS_MS.len() + 1;

/// A route's `guard`, validated.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(try_from = "Object<GuardFields>")]
pub struct GuardConfig {
    pub window_seconds: u16,
    pub min_requests: u32,
    /// Percent.
    pub max_error_increase: f64,
    /// Percent.
    pub error_ratio_floor: f64,
    /// Off unless `max_latency_increase` is set.
    pub latency: Option<LatencyRule>,
}

// Every number in it is finite, checked as it is read.
impl Eq for GuardConfig {}

impl Hash for GuardConfig {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.window_seconds.hash(state);
        self.min_requests.hash(state);
        hash_percent(self.max_error_increase, state);
        hash_percent(self.error_ratio_floor, state);
        self.latency.hash(state);
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct LatencyRule {
    /// Percent.
    pub max_latency_increase: f64,
    pub latency_floor_ms: u64,
}

impl Hash for LatencyRule {
    fn hash<H: Hasher>(&self, state: &mut H) {
        hash_percent(self.max_latency_increase, state);
        self.latency_floor_ms.hash(state);
    }
}

/// A percentage as its bits, with 0 and -0 alike, as `==` has them (none is NaN).
fn hash_percent<H: Hasher>(percent: f64, state: &mut H) {
    (percent + 0.0).to_bits().hash(state);
}

impl Default for GuardConfig {
    fn default() -> Self {
        GuardConfig {
            window_seconds: DEFAULT_WINDOW_SECONDS,
            min_requests: DEFAULT_MIN_REQUESTS,
            max_error_increase: DEFAULT_MAX_ERROR_INCREASE,
            error_ratio_floor: DEFAULT_ERROR_RATIO_FLOOR,
            latency: None,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct GuardFields {
    window_seconds: Option<WindowSeconds>,
    min_requests: Option<MinRequests>,
    max_error_increase: Option<Increase>,
    error_ratio_floor: Option<Floor>,
    max_latency_increase: Option<Increase>,
    latency_floor_ms: Option<Milliseconds>,
}

impl TryFrom<Object<GuardFields>> for GuardConfig {
    type Error = &'static str;

    fn try_from(Object(fields): Object<GuardFields>) -> Result<Self, Self::Error> {
        let defaults = GuardConfig::default();
        let latency = match (fields.max_latency_increase, fields.latency_floor_ms) {
            (None, None) => None,
            (None, Some(_)) => {
                return Err(
                    "takes latency_floor_ms only with max_latency_increase (the latency rule is off without it)",
                )
            }
            (Some(Increase(increase)), floor) => Some(LatencyRule {
                max_latency_increase: increase,
                latency_floor_ms: floor.map_or(0, |Milliseconds(ms)| ms),
            }),
        };
        Ok(GuardConfig {
            window_seconds: fields
                .window_seconds
                .map_or(defaults.window_seconds, |WindowSeconds(s)| s),
            min_requests: fields.min_requests.map_or(defaults.min_requests, |MinRequests(n)| n),
            max_error_increase: fields
                .max_error_increase
                .map_or(defaults.max_error_increase, |Increase(p)| p),
            error_ratio_floor: fields
                .error_ratio_floor
                .map_or(defaults.error_ratio_floor, |Floor(p)| p),
            latency,
        })
    }
}

/// `window_seconds`: a whole number from 1 to 300.
#[derive(Deserialize)]
#[serde(try_from = "Number")]
struct WindowSeconds(u16);

impl TryFrom<Number> for WindowSeconds {
    type Error = String;

    fn try_from(n: Number) -> Result<Self, String> {
        n.whole()
            .filter(|s| (1..=u64::from(MAX_WINDOW_SECONDS)).contains(s))
            .and_then(|s| u16::try_from(s).ok())
            .map(WindowSeconds)
            .ok_or_else(|| format!("{n} is not a whole number from 1 to 300"))
    }
}

/// `min_requests`: a whole number of at least 1.
#[derive(Deserialize)]
#[serde(try_from = "Number")]
struct MinRequests(u32);

impl TryFrom<Number> for MinRequests {
    type Error = String;

    fn try_from(n: Number) -> Result<Self, String> {
        n.whole()
            .filter(|&m| m >= 1)
            .and_then(|m| u32::try_from(m).ok())
            .map(MinRequests)
            .ok_or_else(|| format!("{n} is not a whole number from 1 to 4294967295"))
    }
}

/// `max_error_increase`, `max_latency_increase`: a percentage of 0 or more.
#[derive(Deserialize)]
#[serde(try_from = "Number")]
struct Increase(f64);

impl TryFrom<Number> for Increase {
    type Error = String;

    fn try_from(n: Number) -> Result<Self, String> {
        n.finite()
            .filter(|&p| p >= 0.0)
            .map(Increase)
            .ok_or_else(|| format!("{n} is not a percentage of 0 or more"))
    }
}

/// `error_ratio_floor`: a percentage from 0 to 100.
#[derive(Deserialize)]
#[serde(try_from = "Number")]
struct Floor(f64);

impl TryFrom<Number> for Floor {
    type Error = String;

    fn try_from(n: Number) -> Result<Self, String> {
        n.finite()
            .filter(|p| (0.0..=100.0).contains(p))
            .map(Floor)
            .ok_or_else(|| format!("{n} is not in 0..=100"))
    }
}

/// `latency_floor_ms`: a whole number of milliseconds.
#[derive(Deserialize)]
#[serde(try_from = "Number")]
struct Milliseconds(u64);

impl TryFrom<Number> for Milliseconds {
    type Error = String;

    fn try_from(n: Number) -> Result<Self, String> {
        n.whole()
            .map(Milliseconds)
            .ok_or_else(|| format!("{n} is not a whole number of milliseconds, 0 or more"))
    }
}

/// Any JSON number, kept as written for messages.
struct Number(serde_json::Number);

impl Number {
    fn finite(&self) -> Option<f64> {
        self.0.as_f64().filter(|n| n.is_finite())
    }

    /// The number as a whole number of 0 or more (`10.0` and `1e1` included).
    fn whole(&self) -> Option<u64> {
        self.0.as_u64().or_else(|| {
            let n = self.finite()?;
            // Exact below 2^53; larger whole numbers are refused rather than rounded.
            (n >= 0.0 && n.fract() == 0.0 && n < 9_007_199_254_740_992.0).then_some(n as u64)
        })
    }
}

impl fmt::Display for Number {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl<'de> Deserialize<'de> for Number {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct NumberVisitor;
        impl Visitor<'_> for NumberVisitor {
            type Value = serde_json::Number;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a number")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(v.into())
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Ok(v.into())
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
                serde_json::Number::from_f64(v).ok_or_else(|| E::custom(format!("{v} is not a finite number")))
            }
        }
        deserializer.deserialize_any(NumberVisitor).map(Number)
    }
}

impl fmt::Display for GuardConfig {
    /// What the guard does, in a sentence, for `check` and `explain`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "trips when, over the last {} s, the canary has at least {} judged requests (sticky or random) \
             and, with 99 % confidence, an error ratio above {} % and above primary's x {}",
            self.window_seconds,
            self.min_requests,
            self.error_ratio_floor,
            1.0 + self.max_error_increase / 100.0
        )?;
        if let Some(latency) = &self.latency {
            write!(
                f,
                ", or a p95 above primary's x {} and above {} ms",
                1.0 + latency.max_latency_increase / 100.0,
                latency.latency_floor_ms
            )?;
        }
        f.write_str("; tripped, every request no pin decides goes to primary until the route's configuration changes")
    }
}

/// Whether a decision is judged: made by the split itself, not forced by a pin.
pub fn is_judged(reason: Reason) -> bool {
    matches!(reason, Reason::Sticky { .. } | Reason::Random { .. })
}

/// Whether a response's `:status` is an error the guard counts: any 5xx.
pub fn is_error_status(status: &[u8]) -> bool {
    matches!(status, [b'5', tens, units] if tens.is_ascii_digit() && units.is_ascii_digit())
}

/// The latency bucket of a time in milliseconds.
pub fn latency_bucket(milliseconds: u64) -> usize {
    LATENCY_BOUNDS_MS
        .iter()
        .position(|&bound| milliseconds < u64::from(bound))
        .unwrap_or(LATENCY_BOUNDS_MS.len())
}

/// A fingerprint of everything a route is configured with: a push that leaves it the same keeps
/// the guard's window and trip, any change starts afresh. Every field goes in through the route's
/// `Hash` (derived, so a new field is never left out), hashed with SHA-256, which the module has
/// for its pin tokens anyway: formatting the route for it would cost the module 5 KB. Only
/// compared between the workers of one gateway, which run the same build.
pub fn route_fingerprint(route: &Route) -> u64 {
    let mut fingerprint = Fingerprint(Sha256::new());
    route.hash(&mut fingerprint);
    fingerprint.finish()
}

/// A `Hasher` that feeds SHA-256 and keeps 64 bits of its digest.
struct Fingerprint(Sha256);

impl Hasher for Fingerprint {
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    fn finish(&self) -> u64 {
        let digest = self.0.clone().finalize();
        digest.first_chunk::<8>().map_or(0, |first| u64::from_le_bytes(*first))
    }
}

/// One release's counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    pub requests: u64,
    pub errors: u64,
    /// Requests by latency bucket; all zero unless the latency rule is on.
    pub latency: [u64; LATENCY_BUCKETS],
}

impl Tally {
    fn add(&mut self, other: &Tally) {
        self.requests = self.requests.saturating_add(other.requests);
        self.errors = self.errors.saturating_add(other.errors);
        for (mine, theirs) in self.latency.iter_mut().zip(other.latency) {
            *mine = mine.saturating_add(theirs);
        }
    }

    fn latency_samples(&self) -> u64 {
        self.latency.iter().fold(0, |sum, &n| sum.saturating_add(n))
    }
}

/// One second's counts of both releases.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Slot {
    /// Unix seconds.
    pub second: u64,
    pub primary: Tally,
    pub canary: Tally,
}

impl Slot {
    fn tally_mut(&mut self, release: Variant) -> &mut Tally {
        match release {
            Variant::Primary => &mut self.primary,
            Variant::Canary => &mut self.canary,
        }
    }
}

/// How far ahead of a worker's clock another worker's newest slot may be kept: the workers'
/// ticks read the clock at slightly different moments. Anything further ahead is a clock that
/// jumped, and is dropped.
const FUTURE_SLOTS_KEPT: u64 = 2;

/// Counts by second, oldest first, seconds without a response left out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Window {
    slots: Vec<Slot>,
}

impl Window {
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    pub fn slots(&self) -> &[Slot] {
        &self.slots
    }

    /// The slot of `second`, made if need be (always some: found, or inserted at that index).
    fn slot_mut(&mut self, second: u64) -> Option<&mut Slot> {
        let index = match self.slots.binary_search_by_key(&second, |slot| slot.second) {
            Ok(index) => index,
            Err(index) => {
                let slot = Slot {
                    second,
                    ..Slot::default()
                };
                self.slots.insert(index, slot);
                index
            }
        };
        self.slots.get_mut(index)
    }

    /// Counts one response of `release` at `second`: an error or not, and its time when known.
    pub fn record(&mut self, second: u64, release: Variant, error: bool, latency_ms: Option<u64>) {
        let Some(slot) = self.slot_mut(second) else { return };
        let tally = slot.tally_mut(release);
        tally.requests = tally.requests.saturating_add(1);
        tally.errors = tally.errors.saturating_add(u64::from(error));
        if let Some(latency) = latency_ms.and_then(|ms| tally.latency.get_mut(latency_bucket(ms))) {
            *latency = latency.saturating_add(1);
        }
    }

    /// Adds another worker's counts.
    pub fn merge(&mut self, other: &Window) {
        for theirs in &other.slots {
            if let Some(mine) = self.slot_mut(theirs.second) {
                mine.primary.add(&theirs.primary);
                mine.canary.add(&theirs.canary);
            }
        }
    }

    /// Drops the slots that left the window ending at `now`, and those too far ahead of it.
    pub fn retain_recent(&mut self, now: u64, window_seconds: u16) {
        self.slots
            .retain(|slot| in_window(slot.second, now, window_seconds) || is_just_ahead(slot.second, now));
    }

    /// Each release's counts over the window of `window_seconds` 1 s slots ending with `now`'s.
    pub fn totals(&self, now: u64, window_seconds: u16) -> (Tally, Tally) {
        let (mut primary, mut canary) = (Tally::default(), Tally::default());
        for slot in self
            .slots
            .iter()
            .filter(|slot| in_window(slot.second, now, window_seconds))
        {
            primary.add(&slot.primary);
            canary.add(&slot.canary);
        }
        (primary, canary)
    }
}

fn in_window(second: u64, now: u64, window_seconds: u16) -> bool {
    second <= now && now - second < u64::from(window_seconds)
}

fn is_just_ahead(second: u64, now: u64) -> bool {
    second > now && second - now <= FUTURE_SLOTS_KEPT
}

/// Why the guard tripped: the figures, for the log line.
#[derive(Debug, Clone, PartialEq)]
pub enum Trip {
    Errors {
        canary: (u64, u64),
        primary: (u64, u64),
        /// The Wilson lower bound of the canary's error ratio.
        canary_lower_bound: f64,
        /// The z-test's statistic against primary, none while primary had too few requests.
        z: Option<f64>,
    },
    Latency {
        canary_requests: u64,
        slower: u64,
        threshold_ms: u64,
        primary_p95_ms: Option<u64>,
    },
}

impl fmt::Display for Trip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let percent = |errors: u64, requests: u64| Hundredths(100.0 * errors as f64 / (requests.max(1)) as f64);
        match self {
            Trip::Errors {
                canary: (errors, requests),
                primary: (primary_errors, primary_requests),
                canary_lower_bound,
                z,
            } => {
                write!(
                    f,
                    "canary {errors} errors in {requests} judged requests ({} %, 99 % lower bound {} %), \
                     primary {primary_errors} in {primary_requests} ({} %)",
                    percent(*errors, *requests),
                    Hundredths(100.0 * canary_lower_bound),
                    percent(*primary_errors, *primary_requests),
                )?;
                match z {
                    Some(z) => write!(
                        f,
                        "; z = {} against primary's limit (99 %: {})",
                        Hundredths(*z),
                        Hundredths(Z_99)
                    ),
                    None => f.write_str("; primary has too few requests to compare, the floor alone decides"),
                }
            }
            Trip::Latency {
                canary_requests,
                slower,
                threshold_ms,
                primary_p95_ms,
            } => {
                write!(
                    f,
                    "canary {slower} of {canary_requests} judged requests slower than {threshold_ms} ms \
                     (its p95 is above that, 99 % confidence)"
                )?;
                match primary_p95_ms {
                    Some(p95) => write!(f, "; primary's p95 at most {p95} ms"),
                    None => f.write_str("; primary has too few requests to compare, the floor alone decides"),
                }
            }
        }
    }
}

/// A number with two decimals, written without the float formatting machinery, which would make
/// the module a tenth larger.
struct Hundredths(f64);

impl fmt::Display for Hundredths {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.0.is_finite() {
            return f.write_str(if self.0 > 0.0 { "inf" } else { "-inf" });
        }
        let hundredths = (self.0.abs() * 100.0).round() as u64;
        let sign = if self.0 < 0.0 && hundredths > 0 { "-" } else { "" };
        write!(f, "{sign}{}.{:02}", hundredths / 100, hundredths % 100)
    }
}

/// The lower bound of the Wilson score interval for `successes` in `n` trials, with `z`.
pub fn wilson_lower_bound(successes: u64, n: u64, z: f64) -> f64 {
    if n == 0 {
        return 0.0;
    }
    let n = n as f64;
    let p = (successes as f64 / n).clamp(0.0, 1.0);
    let z2 = z * z;
    let centre = p + z2 / (2.0 * n);
    let spread = z * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt();
    ((centre - spread) / (1.0 + z2 / n)).max(0.0)
}

/// The one-sided two-proportion z statistic (unpooled) of `a`'s ratio above `factor` × `b`'s.
/// Infinite when both ratios are certain (0 or 1) and `a`'s is above; -infinite when not above.
pub fn z_above(a: (u64, u64), b: (u64, u64), factor: f64) -> f64 {
    let ratio = |(k, n): (u64, u64)| (k as f64 / (n.max(1)) as f64).clamp(0.0, 1.0);
    let (pa, pb) = (ratio(a), ratio(b));
    let difference = pa - factor * pb;
    let variance = pa * (1.0 - pa) / (a.1.max(1)) as f64 + factor * factor * pb * (1.0 - pb) / (b.1.max(1)) as f64;
    if variance > 0.0 {
        difference / variance.sqrt()
    } else if difference > 0.0 {
        f64::INFINITY
    } else {
        f64::NEG_INFINITY
    }
}

/// The upper bound of the latency bucket holding the 95th percentile; none in the open bucket.
pub fn p95_upper_bound_ms(tally: &Tally) -> Option<u64> {
    let samples = tally.latency_samples();
    // The smallest count that is at least 95 % of the samples.
    let rank = (samples.saturating_mul(95)).div_ceil(100).max(1);
    let mut seen = 0u64;
    for (bucket, &count) in tally.latency.iter().enumerate() {
        seen = seen.saturating_add(count);
        if seen >= rank {
            return LATENCY_BOUNDS_MS.get(bucket).map(|&bound| u64::from(bound));
        }
    }
    None
}

/// The trip rule on one window's counts.
pub fn judge(config: &GuardConfig, primary: &Tally, canary: &Tally) -> Option<Trip> {
    let min = u64::from(config.min_requests);
    if canary.requests < min {
        return None;
    }
    let errors = judge_errors(config, primary, canary);
    if errors.is_some() {
        return errors;
    }
    judge_latency(config, primary, canary)
}

fn judge_errors(config: &GuardConfig, primary: &Tally, canary: &Tally) -> Option<Trip> {
    let lower_bound = wilson_lower_bound(canary.errors, canary.requests, Z_99);
    if lower_bound <= config.error_ratio_floor / 100.0 {
        return None;
    }
    let z = if primary.requests >= u64::from(config.min_requests) {
        let z = z_above(
            (canary.errors, canary.requests),
            (primary.errors, primary.requests),
            1.0 + config.max_error_increase / 100.0,
        );
        if z <= Z_99 {
            return None;
        }
        Some(z)
    } else {
        None
    };
    Some(Trip::Errors {
        canary: (canary.errors, canary.requests),
        primary: (primary.errors, primary.requests),
        canary_lower_bound: lower_bound,
        z,
    })
}

fn judge_latency(config: &GuardConfig, primary: &Tally, canary: &Tally) -> Option<Trip> {
    let rule = config.latency.as_ref()?;
    let canary_requests = canary.latency_samples();
    if canary_requests < u64::from(config.min_requests) {
        return None;
    }
    let primary_p95_ms = if primary.latency_samples() >= u64::from(config.min_requests) {
        // Primary's p95 in the open bucket: nothing is slower than that, so nothing to judge.
        Some(p95_upper_bound_ms(primary)?)
    } else if rule.latency_floor_ms > 0 {
        None
    } else {
        // No floor and nothing to compare with: every request would be "slow".
        return None;
    };
    let limit = primary_p95_ms.map_or(0.0, |p95| p95 as f64 * (1.0 + rule.max_latency_increase / 100.0));
    let threshold_ms = (limit.ceil() as u64).max(rule.latency_floor_ms);
    // Only buckets wholly at or above the threshold count as slower: coarse, never overstated.
    let slower = canary
        .latency
        .iter()
        .enumerate()
        .filter(|&(bucket, _)| bucket_lower_bound_ms(bucket) >= threshold_ms)
        .fold(0u64, |sum, (_, &count)| sum.saturating_add(count));
    (wilson_lower_bound(slower, canary_requests, Z_99) > 0.05).then_some(Trip::Latency {
        canary_requests,
        slower,
        threshold_ms,
        primary_p95_ms,
    })
}

fn bucket_lower_bound_ms(bucket: usize) -> u64 {
    match bucket.checked_sub(1) {
        None => 0,
        Some(previous) => LATENCY_BOUNDS_MS
            .get(previous)
            .map_or(u64::MAX, |&bound| u64::from(bound)),
    }
}

/// What all workers of a gateway share about one route: whose configuration it judges (the
/// route's fingerprint), whether it tripped, and the merged window.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SharedState {
    pub fingerprint: u64,
    pub tripped: bool,
    pub window: Window,
}

const FORMAT_VERSION: u8 = 1;
const TRIPPED: u8 = 1;
const WITH_LATENCY: u8 = 2;

impl SharedState {
    pub fn new(fingerprint: u64) -> Self {
        SharedState {
            fingerprint,
            ..SharedState::default()
        }
    }

    /// The compact form in the host's shared data: a version byte, the fingerprint (8 bytes,
    /// little-endian), a flags byte, then LEB128 numbers: the slot count, and for each slot its
    /// second and each release's requests, errors and (with the latency rule) bucket counts.
    pub fn encode(&self, with_latency: bool) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 + self.window.slots.len() * if with_latency { 48 } else { 8 });
        out.push(FORMAT_VERSION);
        out.extend_from_slice(&self.fingerprint.to_le_bytes());
        out.push(if self.tripped { TRIPPED } else { 0 } | if with_latency { WITH_LATENCY } else { 0 });
        put_varint(&mut out, self.window.slots.len() as u64);
        for slot in &self.window.slots {
            put_varint(&mut out, slot.second);
            for tally in [&slot.primary, &slot.canary] {
                put_varint(&mut out, tally.requests);
                put_varint(&mut out, tally.errors);
                if with_latency {
                    tally.latency.iter().for_each(|&count| put_varint(&mut out, count));
                }
            }
        }
        out
    }

    /// The state in `bytes`, or none if they are not one `encode` wrote.
    pub fn decode(bytes: &[u8]) -> Option<SharedState> {
        let (&version, rest) = bytes.split_first()?;
        if version != FORMAT_VERSION {
            return None;
        }
        let (fingerprint, rest) = rest.split_first_chunk::<8>()?;
        let (&flags, mut rest) = rest.split_first()?;
        if flags & !(TRIPPED | WITH_LATENCY) != 0 {
            return None;
        }
        let with_latency = flags & WITH_LATENCY != 0;
        let count = take_varint(&mut rest)?;
        // Every slot takes at least 5 bytes: no count can make us reserve more than the input.
        let mut slots = Vec::with_capacity(usize::try_from(count).ok()?.min(rest.len() / 5));
        for _ in 0..count {
            let mut slot = Slot {
                second: take_varint(&mut rest)?,
                ..Slot::default()
            };
            if slots.last().is_some_and(|last: &Slot| last.second >= slot.second) {
                return None;
            }
            for tally in [&mut slot.primary, &mut slot.canary] {
                tally.requests = take_varint(&mut rest)?;
                tally.errors = take_varint(&mut rest)?;
                if with_latency {
                    for count in &mut tally.latency {
                        *count = take_varint(&mut rest)?;
                    }
                }
            }
            slots.push(slot);
        }
        rest.is_empty().then_some(SharedState {
            fingerprint: u64::from_le_bytes(*fingerprint),
            tripped: flags & TRIPPED != 0,
            window: Window { slots },
        })
    }
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value & 0x7f) as u8 | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn take_varint(input: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = input.split_first()?;
        *input = rest;
        let bits = u64::from(byte & 0x7f);
        if shift == 63 && bits > 1 {
            return None; // beyond 64 bits
        }
        value |= bits << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

/// A configuration's first look at a route's shared state.
#[derive(Debug, PartialEq, Eq)]
pub enum Claim {
    /// The state is this route's, as configured: keep judging it (and its trip).
    Joined { tripped: bool },
    /// The state is absent, unreadable or another configuration's: replace it with this.
    Fresh(Vec<u8>),
}

/// What a newly accepted configuration does with a route's shared state.
pub fn claim(current: Option<&[u8]>, fingerprint: u64, config: &GuardConfig) -> Claim {
    match current.and_then(SharedState::decode) {
        Some(state) if state.fingerprint == fingerprint => Claim::Joined { tripped: state.tripped },
        _ => Claim::Fresh(SharedState::new(fingerprint).encode(config.latency.is_some())),
    }
}

/// A worker's tick for one route, given the shared state as it reads it now.
#[derive(Debug, PartialEq)]
pub enum Update {
    /// A newer configuration of the route owns the state: this one's counts are dropped.
    Superseded,
    /// Nothing to write; the route's verdict.
    Unchanged { tripped: bool },
    /// Write `state` (compare-and-swap); `trip` when this write trips the guard.
    Write { state: Vec<u8>, trip: Option<Trip> },
}

/// Merges a worker's `pending` counts into the shared state `current`, and judges the window
/// ending at `now` (Unix seconds).
pub fn update(current: Option<&[u8]>, fingerprint: u64, pending: &Window, now: u64, config: &GuardConfig) -> Update {
    let mut state = match current.and_then(SharedState::decode) {
        Some(state) if state.fingerprint != fingerprint => return Update::Superseded,
        Some(state) if state.tripped || pending.is_empty() => return Update::Unchanged { tripped: state.tripped },
        Some(state) => state,
        None => SharedState::new(fingerprint),
    };
    state.window.merge(pending);
    state.window.retain_recent(now, config.window_seconds);
    let (primary, canary) = state.window.totals(now, config.window_seconds);
    let trip = judge(config, &primary, &canary);
    state.tripped = trip.is_some();
    Update::Write {
        state: state.encode(config.latency.is_some()),
        trip,
    }
}

/// The hosts a configuration guards.
pub fn guarded_hosts(config: &Config) -> Vec<String> {
    config
        .routes
        .iter()
        .filter(|route| route.guard.is_some())
        .map(|route| route.host.clone())
        .collect()
}

/// The hosts each plugin (by name) of one VM has set the tripped gauge for, with a handle on the
/// plugin's current configuration. A gauge is Envoy's, one per host, so a host a plugin stops
/// guarding (its `guard` or its route removed) must have its gauge set to 0 by that plugin, or it
/// shows a trip until the gateway restarts; but not while another plugin of the VM still guards
/// the host and sets the gauge itself. Vectors, not sets: a VM has a few plugins of a few hosts,
/// and sets cost the module 16 KB.
pub struct GuardedHosts<Current> {
    by_plugin: Vec<PluginHosts<Current>>,
}

struct PluginHosts<Current> {
    name: Vec<u8>,
    hosts: Vec<String>,
    current: Current,
}

impl<Current> Default for GuardedHosts<Current> {
    fn default() -> Self {
        GuardedHosts { by_plugin: Vec::new() }
    }
}

impl<Current> GuardedHosts<Current> {
    /// Records the hosts `plugin`'s newly accepted configuration guards, and `current`, its
    /// handle; returns the hosts whose gauge goes to 0 (guarded by the plugin before, and by no
    /// plugin of the VM now) and the handle of the configuration this one replaces.
    pub fn replace(&mut self, plugin: &[u8], hosts: Vec<String>, current: Current) -> (Vec<String>, Option<Current>) {
        let (before, previous) = match self.by_plugin.iter_mut().find(|entry| entry.name == plugin) {
            Some(entry) => (
                std::mem::replace(&mut entry.hosts, hosts),
                Some(std::mem::replace(&mut entry.current, current)),
            ),
            None => {
                self.by_plugin.push(PluginHosts {
                    name: plugin.to_vec(),
                    hosts,
                    current,
                });
                (Vec::new(), None)
            }
        };
        let unguarded = before
            .into_iter()
            .filter(|host| !self.by_plugin.iter().any(|entry| entry.hosts.contains(host)))
            .collect();
        (unguarded, previous)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn guard(json: &str) -> Result<GuardConfig, String> {
        let config = format!(
            r#"{{"routes": [{{"host": "a.example.com", "primary": {{}}, "canary": {{}}, "canary_weight": 10, "guard": {json}}}]}}"#
        );
        Config::from_json(config.as_bytes())
            .map(|config| config.routes[0].guard.clone().expect("guarded"))
            .map_err(|e| e.to_string())
    }

    fn tally(requests: u64, errors: u64) -> Tally {
        Tally {
            requests,
            errors,
            ..Tally::default()
        }
    }

    fn hosts(names: &[&str]) -> Vec<String> {
        names.iter().map(|name| (*name).to_owned()).collect()
    }

    #[test]
    fn the_guarded_hosts_are_the_routes_with_a_guard() {
        let config = Config::from_json(
            br#"{"routes": [
                {"host": "a.example.com", "primary": {}, "canary": {}, "canary_weight": 10, "guard": {}},
                {"host": "b.example.com", "primary": {}, "canary": {}, "canary_weight": 10}]}"#,
        )
        .expect("valid");
        assert_eq!(guarded_hosts(&config), hosts(&["a.example.com"]));
    }

    #[test]
    fn a_host_no_longer_guarded_has_its_gauge_zeroed_once() {
        let mut guarded = GuardedHosts::default();
        assert_eq!(guarded.replace(b"gw.one", hosts(&["a", "b"]), 1), (vec![], None));
        assert_eq!(
            guarded.replace(b"gw.one", hosts(&["a", "b"]), 2),
            (vec![], Some(1)),
            "same hosts: nothing to zero"
        );
        assert_eq!(
            guarded.replace(b"gw.one", hosts(&["b", "c"]), 3),
            (hosts(&["a"]), Some(2))
        );
        assert_eq!(
            guarded.replace(b"gw.one", hosts(&["b", "c"]), 4),
            (vec![], Some(3)),
            "zeroed by the push that dropped it"
        );
        assert_eq!(guarded.replace(b"gw.one", hosts(&[]), 5), (hosts(&["b", "c"]), Some(4)));
    }

    #[test]
    fn a_host_another_plugin_of_the_vm_still_guards_keeps_its_gauge() {
        let mut guarded = GuardedHosts::default();
        guarded.replace(b"gw.one", hosts(&["a", "b"]), 1);
        guarded.replace(b"gw.two", hosts(&["b"]), 2);
        assert_eq!(guarded.replace(b"gw.one", hosts(&[]), 3), (hosts(&["a"]), Some(1)));
        assert_eq!(guarded.replace(b"gw.two", hosts(&[]), 4), (hosts(&["b"]), Some(2)));
        assert_eq!(
            guarded.replace(b"gw.three", hosts(&[]), 5),
            (vec![], None),
            "a plugin that never guarded zeroes nothing"
        );
    }

    #[test]
    fn an_empty_guard_takes_every_default() {
        assert_eq!(guard("{}"), Ok(GuardConfig::default()));
        assert_eq!(
            guard(r#"{"window_seconds": null, "min_requests": null}"#),
            Ok(GuardConfig::default())
        );
        assert_eq!(
            guard(
                r#"{"window_seconds": 300, "min_requests": 1, "max_error_increase": 0, "error_ratio_floor": 100, "max_latency_increase": 30, "latency_floor_ms": 250}"#
            ),
            Ok(GuardConfig {
                window_seconds: 300,
                min_requests: 1,
                max_error_increase: 0.0,
                error_ratio_floor: 100.0,
                latency: Some(LatencyRule {
                    max_latency_increase: 30.0,
                    latency_floor_ms: 250
                }),
            })
        );
        assert_eq!(
            guard(r#"{"window_seconds": 1e1, "max_latency_increase": 12.5}"#).map(|g| (g.window_seconds, g.latency)),
            Ok((
                10,
                Some(LatencyRule {
                    max_latency_increase: 12.5,
                    latency_floor_ms: 0
                })
            ))
        );
    }

    #[test]
    fn guard_fields_are_refused_with_their_path() {
        let cases = [
            (r#"{"window_seconds": 0}"#, "routes[0].guard.window_seconds: 0 is not a whole number from 1 to 300"),
            (r#"{"window_seconds": 301}"#, "routes[0].guard.window_seconds: 301 is not a whole number from 1 to 300"),
            (r#"{"window_seconds": 2.5}"#, "routes[0].guard.window_seconds: 2.5 is not a whole number from 1 to 300"),
            (r#"{"window_seconds": "10"}"#, "routes[0].guard.window_seconds: expected a number, found the string \"10\""),
            (r#"{"min_requests": 0}"#, "routes[0].guard.min_requests: 0 is not a whole number from 1 to 4294967295"),
            (r#"{"min_requests": -3}"#, "routes[0].guard.min_requests: -3 is not a whole number from 1 to 4294967295"),
            (r#"{"max_error_increase": -1}"#, "routes[0].guard.max_error_increase: -1 is not a percentage of 0 or more"),
            (r#"{"error_ratio_floor": 100.5}"#, "routes[0].guard.error_ratio_floor: 100.5 is not in 0..=100"),
            (r#"{"error_ratio_floor": true}"#, "routes[0].guard.error_ratio_floor: expected a number, found true"),
            (r#"{"max_latency_increase": -5}"#, "routes[0].guard.max_latency_increase: -5 is not a percentage of 0 or more"),
            (r#"{"latency_floor_ms": 100}"#, "routes[0].guard: takes latency_floor_ms only with max_latency_increase (the latency rule is off without it)"),
            (r#"{"max_latency_increase": 30, "latency_floor_ms": 0.5}"#, "routes[0].guard.latency_floor_ms: 0.5 is not a whole number of milliseconds, 0 or more"),
            (r#"{"window": 10}"#, "routes[0].guard.window: unknown field (expected one of: window_seconds, min_requests, max_error_increase, error_ratio_floor, max_latency_increase, latency_floor_ms)"),
            (r#"[]"#, "routes[0].guard: expected an object, found an array"),
            (r#"true"#, "routes[0].guard: expected an object, found true"),
        ];
        for (json, expected) in cases {
            assert_eq!(guard(json), Err(expected.to_owned()), "{json}");
        }
    }

    #[test]
    fn only_sticky_and_random_choices_are_judged() {
        assert!(is_judged(Reason::Sticky { bucket: 1 }));
        assert!(is_judged(Reason::Random { bucket: 1 }));
        assert!(!is_judged(Reason::Pinned { rule: 0 }));
    }

    #[test]
    fn errors_are_5xx_statuses() {
        for status in [&b"500"[..], b"502", b"503", b"504", b"599"] {
            assert!(is_error_status(status), "{status:?}");
        }
        for status in [
            &b"200"[..],
            b"404",
            b"429",
            b"499",
            b"600",
            b"5",
            b"50",
            b"5000",
            b"5x0",
            b"",
            b"\xff\xff\xff",
        ] {
            assert!(!is_error_status(status), "{status:?}");
        }
    }

    #[test]
    fn latency_buckets_split_at_their_bounds() {
        assert_eq!(latency_bucket(0), 0);
        assert_eq!(latency_bucket(4), 0);
        assert_eq!(latency_bucket(5), 1);
        assert_eq!(latency_bucket(29_999), LATENCY_BUCKETS - 2);
        assert_eq!(latency_bucket(30_000), LATENCY_BUCKETS - 1);
        assert_eq!(latency_bucket(u64::MAX), LATENCY_BUCKETS - 1);
    }

    #[test]
    fn the_window_keeps_the_last_seconds_only() {
        let mut window = Window::default();
        for second in 100..120 {
            window.record(second, Variant::Canary, second % 2 == 0, None);
            window.record(second, Variant::Primary, false, None);
        }
        // Seconds 110 to 119: ten slots, five of them with a canary error.
        assert_eq!(window.totals(119, 10), (tally(10, 0), tally(10, 5)));
        assert_eq!(window.totals(125, 10), (tally(4, 0), tally(4, 2)));
        assert_eq!(window.totals(200, 10), (tally(0, 0), tally(0, 0)));
        window.retain_recent(119, 10);
        assert_eq!(window.slots().len(), 10);
        window.record(121, Variant::Canary, true, None); // a worker whose clock is a tick ahead
        window.record(150, Variant::Canary, true, None); // a clock that jumped
        window.retain_recent(119, 10);
        assert_eq!(
            window.slots().iter().map(|s| s.second).collect::<Vec<_>>(),
            (110..120).chain([121]).collect::<Vec<_>>()
        );
        assert_eq!(
            window.totals(119, 10).1,
            tally(10, 5),
            "ahead of the clock: not judged yet"
        );
    }

    #[test]
    fn wilson_lower_bound_matches_published_values() {
        // 5 in 20 at z = 2.326: 0.0964, and 20 in 20: n / (n + z²) = 0.7870 (Wilson, 1927).
        assert!((wilson_lower_bound(5, 20, Z_99) - 0.0964).abs() < 5e-4);
        assert!((wilson_lower_bound(0, 20, Z_99)).abs() < 1e-12);
        assert!((wilson_lower_bound(20, 20, Z_99) - 0.7870).abs() < 5e-4);
        assert_eq!(wilson_lower_bound(3, 0, Z_99), 0.0);
    }

    #[test]
    fn one_error_in_a_healthy_canarys_first_requests_does_not_trip() {
        let config = GuardConfig::default();
        assert_eq!(judge(&config, &tally(0, 0), &tally(20, 1)), None);
        assert_eq!(judge(&config, &tally(1000, 0), &tally(20, 1)), None);
        assert_eq!(judge(&config, &tally(1000, 0), &tally(20, 2)), None);
    }

    #[test]
    fn a_failing_canary_trips_against_a_healthy_primary() {
        let config = GuardConfig::default();
        let trip = judge(&config, &tally(500, 5), &tally(100, 20)).expect("trips");
        let Trip::Errors { canary, primary, z, .. } = &trip else {
            panic!("{trip:?}")
        };
        assert_eq!((*canary, *primary), ((20, 100), (5, 500)));
        assert!(z.is_some_and(|z| z > Z_99));
        assert!(
            trip.to_string()
                .starts_with("canary 20 errors in 100 judged requests (20.00 %"),
            "{trip}"
        );
    }

    #[test]
    fn figures_are_written_with_two_decimals() {
        let written: Vec<String> = [0.0, 0.004, 0.005, 2.326_347, -1.5, 1234.5678, f64::INFINITY]
            .iter()
            .map(|&x| Hundredths(x).to_string())
            .collect();
        assert_eq!(written, ["0.00", "0.00", "0.01", "2.33", "-1.50", "1234.57", "inf"]);
    }

    #[test]
    fn below_min_requests_nothing_trips() {
        let config = GuardConfig::default();
        assert_eq!(judge(&config, &tally(1000, 0), &tally(19, 19)), None);
        assert!(judge(&config, &tally(1000, 0), &tally(20, 20)).is_some());
    }

    #[test]
    fn the_floor_alone_decides_while_primary_has_too_few_requests() {
        let config = GuardConfig::default();
        // Primary's 19 requests with 19 errors would excuse any canary; with too few, they do not count.
        let trip = judge(&config, &tally(19, 19), &tally(100, 20)).expect("trips on the floor");
        assert!(matches!(trip, Trip::Errors { z: None, .. }));
        assert!(trip.to_string().ends_with("the floor alone decides"), "{trip}");
        assert_eq!(judge(&config, &tally(20, 20), &tally(100, 20)), None);
        // Below the floor nothing trips, whatever primary does.
        assert_eq!(judge(&config, &tally(10_000, 0), &tally(10_000, 50)), None);
    }

    #[test]
    fn a_canary_as_bad_as_primary_allows_does_not_trip() {
        let config = GuardConfig::default();
        // Primary at 10 %: the canary may have up to 15 %.
        assert_eq!(judge(&config, &tally(10_000, 1_000), &tally(10_000, 1_500)), None);
        assert!(judge(&config, &tally(10_000, 1_000), &tally(10_000, 1_700)).is_some());
        let strict = GuardConfig {
            max_error_increase: 0.0,
            ..GuardConfig::default()
        };
        assert!(judge(&strict, &tally(10_000, 1_000), &tally(10_000, 1_200)).is_some());
    }

    fn latency_tally(samples: &[(u64, u64)]) -> Tally {
        let mut tally = Tally::default();
        for &(ms, count) in samples {
            tally.requests += count;
            tally.latency[latency_bucket(ms)] += count;
        }
        tally
    }

    #[test]
    fn p95_is_the_upper_bound_of_its_bucket() {
        assert_eq!(p95_upper_bound_ms(&latency_tally(&[(40, 95), (400, 5)])), Some(50));
        assert_eq!(p95_upper_bound_ms(&latency_tally(&[(40, 94), (400, 6)])), Some(500));
        assert_eq!(p95_upper_bound_ms(&latency_tally(&[(40, 1), (40_000, 99)])), None);
        assert_eq!(p95_upper_bound_ms(&Tally::default()), None);
    }

    #[test]
    fn a_slow_canary_trips_the_latency_rule() {
        let config = GuardConfig {
            latency: Some(LatencyRule {
                max_latency_increase: 30.0,
                latency_floor_ms: 100,
            }),
            ..GuardConfig::default()
        };
        let primary = latency_tally(&[(40, 950), (120, 50)]); // p95 at most 50 ms: limit 65 -> the floor, 100
        let fast = latency_tally(&[(40, 190), (120, 10)]);
        assert_eq!(judge(&config, &primary, &fast), None);
        let slow = latency_tally(&[(40, 150), (400, 50)]);
        let trip = judge(&config, &primary, &slow).expect("slow");
        assert_eq!(
            trip,
            Trip::Latency {
                canary_requests: 200,
                slower: 50,
                threshold_ms: 100,
                primary_p95_ms: Some(50)
            }
        );
        // Off unless configured.
        assert_eq!(judge(&GuardConfig::default(), &primary, &slow), None);
        // With no floor and primary too quiet, latency is not judged.
        let no_floor = GuardConfig {
            latency: Some(LatencyRule {
                max_latency_increase: 30.0,
                latency_floor_ms: 0,
            }),
            ..GuardConfig::default()
        };
        assert_eq!(judge(&no_floor, &Tally::default(), &slow), None);
    }

    #[test]
    fn shared_state_round_trips_and_refuses_anything_else() {
        let mut window = Window::default();
        window.record(1_700_000_000, Variant::Canary, true, Some(120));
        window.record(1_700_000_001, Variant::Primary, false, Some(3));
        let state = SharedState {
            fingerprint: 0x0123_4567_89ab_cdef,
            tripped: true,
            window,
        };
        assert_eq!(SharedState::decode(&state.encode(true)), Some(state.clone()));
        let without_latency = SharedState::decode(&state.encode(false)).expect("decodes");
        assert_eq!(without_latency.window.totals(1_700_000_001, 10).1.requests, 1);
        let bytes = state.encode(false);
        assert_eq!(SharedState::decode(&bytes[..bytes.len() - 1]), None);
        assert_eq!(SharedState::decode(&[bytes.as_slice(), &[0]].concat()), None);
        assert_eq!(SharedState::decode(&[]), None);
        assert_eq!(SharedState::decode(&[2; 12]), None);
    }

    #[test]
    fn a_new_configuration_joins_its_own_state_and_replaces_any_other() {
        let config = GuardConfig::default();
        let tripped = SharedState {
            fingerprint: 7,
            tripped: true,
            window: Window::default(),
        }
        .encode(false);
        assert_eq!(claim(Some(&tripped), 7, &config), Claim::Joined { tripped: true });
        let fresh = SharedState::new(8).encode(false);
        assert_eq!(claim(Some(&tripped), 8, &config), Claim::Fresh(fresh.clone()));
        assert_eq!(claim(None, 8, &config), Claim::Fresh(fresh.clone()));
        assert_eq!(claim(Some(b"junk"), 8, &config), Claim::Fresh(fresh));
    }

    #[test]
    fn a_tick_merges_judges_and_stays_tripped() {
        let config = GuardConfig::default();
        let mut pending = Window::default();
        for n in 0..40 {
            pending.record(1_000, Variant::Canary, n % 2 == 0, None);
            pending.record(1_000, Variant::Primary, false, None);
        }
        let healthy = SharedState::new(9).encode(false);
        let Update::Write { state, trip } = update(Some(&healthy), 9, &pending, 1_000, &config) else {
            panic!("writes")
        };
        assert!(trip.is_some());
        let shared = SharedState::decode(&state).expect("decodes");
        assert!(shared.tripped);
        assert_eq!(shared.window.totals(1_000, 10), (tally(40, 0), tally(40, 20)));
        // Tripped, it stays so: nothing more to write.
        assert_eq!(
            update(Some(&state), 9, &pending, 1_001, &config),
            Update::Unchanged { tripped: true }
        );
        // Another configuration's state is not ours to write.
        assert_eq!(update(Some(&state), 10, &pending, 1_001, &config), Update::Superseded);
        // Nothing new: only the verdict is read.
        assert_eq!(
            update(Some(&healthy), 9, &Window::default(), 1_001, &config),
            Update::Unchanged { tripped: false }
        );
    }

    #[test]
    fn fingerprints_change_with_any_field_of_the_route() {
        let route = |fields: &str| {
            let json = format!(
                r#"{{"routes": [{{"host": "a.example.com", "primary": {{}}, "canary": {{}}, "canary_weight": 10{fields}}}]}}"#
            );
            route_fingerprint(&Config::from_json(json.as_bytes()).expect("valid").routes[0])
        };
        let base = route(r#", "guard": {}"#);
        assert_eq!(
            base,
            route(r#", "guard": {"window_seconds": 10}"#),
            "the same configuration"
        );
        assert_eq!(
            route(r#", "guard": {"error_ratio_floor": 0}"#),
            route(r#", "guard": {"error_ratio_floor": -0.0}"#),
            "equal numbers"
        );
        let mut seen = vec![base];
        for other in [
            r#", "guard": {"window_seconds": 11}"#,
            r#", "guard": {"max_error_increase": 50.5}"#,
            r#", "guard": {"max_latency_increase": 20}"#,
            r#", "guard": {"max_latency_increase": 20, "latency_floor_ms": 1}"#,
            r#", "guard": {}, "salt": "s""#,
            r#", "guard": {}, "sticky": {"header": "u"}"#,
            "",
        ] {
            let fingerprint = route(other);
            assert!(!seen.contains(&fingerprint), "{other}");
            seen.push(fingerprint);
        }
    }

    mod properties {
        use super::*;
        use crate::properties::check;
        use proptest::collection::vec;
        use proptest::prelude::*;
        #[cfg(target_arch = "wasm32")]
        use wasm_bindgen_test::wasm_bindgen_test as test;

        /// Responses: (second, canary?, error?, latency in ms).
        fn responses() -> impl Strategy<Value = Vec<(u64, bool, bool, u64)>> {
            vec((1_000u64..1_040, any::<bool>(), any::<bool>(), 0u64..40_000), 0..200)
        }

        fn release(canary: bool) -> Variant {
            if canary {
                Variant::Canary
            } else {
                Variant::Primary
            }
        }

        #[test]
        fn workers_merged_in_any_split_count_what_one_window_counts() {
            check(
                (responses(), vec(0usize..4, 200), 1_000u64..1_045, 1u16..=30),
                |(events, workers, now, w)| {
                    let mut whole = Window::default();
                    let mut parts = vec![Window::default(); 4];
                    for (&(second, canary, error, ms), &worker) in events.iter().zip(workers.iter().cycle()) {
                        whole.record(second, release(canary), error, Some(ms));
                        parts[worker].record(second, release(canary), error, Some(ms));
                    }
                    let mut merged = Window::default();
                    for part in parts.iter().rev() {
                        merged.merge(part);
                    }
                    prop_assert_eq!(&merged, &whole);
                    // And the totals are exactly the responses of the window's seconds.
                    let (primary, canary) = whole.totals(now, w);
                    let counted = |canary_side: bool| {
                        let inside = events
                            .iter()
                            .filter(|(s, c, _, _)| *c == canary_side && *s <= now && now - s < u64::from(w));
                        let (mut requests, mut errors) = (0, 0);
                        for (_, _, error, _) in inside {
                            requests += 1;
                            errors += u64::from(*error);
                        }
                        (requests, errors)
                    };
                    prop_assert_eq!((primary.requests, primary.errors), counted(false));
                    prop_assert_eq!((canary.requests, canary.errors), counted(true));
                    prop_assert_eq!(canary.latency.iter().sum::<u64>(), canary.requests);
                    // Pruning never changes what the window holds.
                    let mut pruned = whole.clone();
                    pruned.retain_recent(now, w);
                    prop_assert_eq!(pruned.totals(now, w), whole.totals(now, w));
                    prop_assert!(pruned.slots().len() <= usize::from(w) + FUTURE_SLOTS_KEPT as usize);
                    Ok(())
                },
            );
        }

        #[test]
        fn ticks_of_any_workers_in_any_order_share_every_count() {
            let config = GuardConfig {
                min_requests: u32::MAX, // never trips: only the counting is under test
                ..GuardConfig::default()
            };
            check(
                (responses(), vec(0usize..3, 200), vec(0usize..3, 0..12)),
                |(events, workers, order)| {
                    let mut pending = vec![Window::default(); 3];
                    for (&(second, canary, error, _), &worker) in events.iter().zip(workers.iter().cycle()) {
                        pending[worker].record(second, release(canary), error, None);
                    }
                    let mut shared = SharedState::new(5).encode(false);
                    // Workers tick in `order`, then each once more; a tick merges all it counted.
                    for worker in order.into_iter().chain(0..3) {
                        if let Update::Write { state, trip } =
                            update(Some(&shared), 5, &pending[worker], 1_039, &config)
                        {
                            prop_assert!(trip.is_none());
                            shared = state;
                        }
                        pending[worker] = Window::default();
                    }
                    let state = SharedState::decode(&shared).expect("decodes");
                    let mut all = Window::default();
                    for (second, canary, error, _) in events {
                        all.record(second, release(canary), error, None);
                    }
                    prop_assert_eq!(state.window.totals(1_039, 10), all.totals(1_039, 10));
                    Ok(())
                },
            );
        }

        #[test]
        fn shared_state_round_trips() {
            check(
                (responses(), any::<u64>(), any::<bool>()),
                |(events, fingerprint, tripped)| {
                    let mut window = Window::default();
                    for (second, canary, error, ms) in events {
                        window.record(second, release(canary), error, Some(ms));
                    }
                    let state = SharedState {
                        fingerprint,
                        tripped,
                        window,
                    };
                    prop_assert_eq!(SharedState::decode(&state.encode(true)), Some(state));
                    Ok(())
                },
            );
        }

        #[test]
        fn any_bytes_decode_to_a_state_or_none() {
            check(vec(any::<u8>(), 0..64), |mut bytes| {
                if let Some(first) = bytes.first_mut() {
                    *first = FORMAT_VERSION; // reach past the version byte
                }
                if let Some(state) = SharedState::decode(&bytes) {
                    let with_latency = bytes.get(9).is_some_and(|flags| flags & WITH_LATENCY != 0);
                    prop_assert_eq!(SharedState::decode(&state.encode(with_latency)), Some(state));
                }
                Ok(())
            });
        }

        fn guard_config() -> impl Strategy<Value = GuardConfig> {
            (1u32..50, 0.0..200.0f64, 0.0..20.0f64).prop_map(|(min_requests, increase, floor)| GuardConfig {
                min_requests,
                max_error_increase: increase,
                error_ratio_floor: floor,
                ..GuardConfig::default()
            })
        }

        fn counts() -> impl Strategy<Value = (u64, u64)> {
            (0u64..2_000).prop_flat_map(|n| (Just(n), 0..=n))
        }

        #[test]
        fn the_trip_rule_holds_its_promises() {
            check((guard_config(), counts(), counts()), |(config, (np, ep), (nc, ec))| {
                let trip = judge(&config, &tally(np, ep), &tally(nc, ec));
                let ratio = |e: u64, n: u64| e as f64 / n.max(1) as f64;
                if trip.is_some() {
                    prop_assert!(nc >= u64::from(config.min_requests));
                    // Tripped: the canary's own ratio is above the floor and above primary's limit.
                    prop_assert!(ratio(ec, nc) > config.error_ratio_floor / 100.0);
                    if np >= u64::from(config.min_requests) {
                        prop_assert!(ratio(ec, nc) > ratio(ep, np) * (1.0 + config.max_error_increase / 100.0));
                    }
                    // More canary errors, or fewer primary errors, trip it as well.
                    if ec < nc {
                        prop_assert!(judge(&config, &tally(np, ep), &tally(nc, ec + 1)).is_some());
                    }
                    if ep > 0 {
                        prop_assert!(judge(&config, &tally(np, ep - 1), &tally(nc, ec)).is_some());
                    }
                }
                let lower = wilson_lower_bound(ec, nc, Z_99);
                prop_assert!((0.0..=ratio(ec, nc) + 1e-12).contains(&lower), "{lower}");
                Ok(())
            });
        }

        /// A small, seeded generator for simulated traffic (xorshift64*).
        struct Simulation(u64);

        impl Simulation {
            fn errors(&mut self, requests: u64, ratio: f64) -> u64 {
                (0..requests)
                    .filter(|_| {
                        self.0 ^= self.0 >> 12;
                        self.0 ^= self.0 << 25;
                        self.0 ^= self.0 >> 27;
                        let uniform = (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64;
                        uniform < ratio
                    })
                    .count() as u64
            }
        }

        /// How often the default rule trips in windows of `requests` per release with random
        /// (binomial) errors at the given ratios.
        fn trip_rate(primary_ratio: f64, canary_ratio: f64, requests: u64, windows: u32) -> f64 {
            let config = GuardConfig::default();
            let mut simulation = Simulation(0x9e37_79b9_7f4a_7c15);
            let trips = (0..windows)
                .filter(|_| {
                    let primary = tally(requests, simulation.errors(requests, primary_ratio));
                    let canary = tally(requests, simulation.errors(requests, canary_ratio));
                    judge(&config, &primary, &canary).is_some()
                })
                .count();
            trips as f64 / f64::from(windows)
        }

        #[test]
        fn healthy_canaries_rarely_trip_and_failing_ones_always_do() {
            let windows = if cfg!(target_arch = "wasm32") { 300 } else { 3_000 };
            // A 10 s window at 50 requests a second per release.
            assert!(trip_rate(0.025, 0.025, 500, windows) < 0.002);
            assert!(trip_rate(0.025, 0.03, 500, windows) < 0.01);
            assert!(trip_rate(0.0, 0.2, 100, windows) > 0.999);
            assert!(trip_rate(0.025, 0.2, 500, windows) > 0.999);
        }
    }
}
