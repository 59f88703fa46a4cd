//! Rate-limit buckets on simulated time (nanoseconds passed in), so every
//! count is exact and nothing sleeps.

use super::*;
use std::sync::atomic::AtomicUsize;
use weft_mesh::config::rate_limit::{Limit, Override};

const MS: u64 = 1_000_000;

/// Requests every `step` ns from 0 through `until`: how many were admitted.
fn admitted(b: &Bucket, step: u64, until: u64) -> u64 {
    (0..=until / step)
        .filter(|i| b.take(i * step).is_ok())
        .count() as u64
}

#[test]
fn admissions_are_burst_plus_rate_times_time() {
    // Saturating arrivals (every 1 ms) over [0, t]: exactly burst + floor(rate * t).
    for (rate, burst, secs) in [(10, 5, 2), (100, 1, 3), (3, 7, 5), (1000, 1000, 1)] {
        let b = Bucket::new(rate, burst);
        let t = secs * NANOS;
        let expected = u64::from(burst) + u64::from(rate) * secs;
        assert_eq!(
            admitted(&b, MS / 4, t),
            expected,
            "rate {rate} burst {burst}"
        );
    }
    // Arrivals slower than the rate are all admitted.
    let b = Bucket::new(10, 1);
    assert_eq!(admitted(&b, 100 * MS, 5 * NANOS), 51);
}

#[test]
fn a_burst_then_a_wait_until_the_next_token() {
    let b = Bucket::new(10, 5);
    for _ in 0..5 {
        assert_eq!(b.take(0), Ok(()));
    }
    assert_eq!(b.take(0), Err(100 * MS));
    assert_eq!(b.take(30 * MS), Err(70 * MS));
    assert_eq!(b.take(100 * MS), Ok(()));
    // After a quiet spell the bucket is full again, never fuller.
    assert!(b.idle(10 * NANOS));
    assert_eq!(admitted_at(&b, 10 * NANOS, 100), 5);
}

fn admitted_at(b: &Bucket, now: u64, tries: usize) -> usize {
    (0..tries).filter(|_| b.take(now).is_ok()).count()
}

#[test]
fn retry_after_is_whole_seconds_at_least_one() {
    let spec = RateLimit {
        total: Some(Limit {
            requests_per_second: 1,
            burst: Some(1),
        }),
        ..RateLimit::default()
    };
    let rl = InboundRateLimit::buckets(&spec, 64);
    assert_eq!(rl.check_at(None, 0), Ok(()));
    let refused = |at| rl.check_at(None, at).unwrap_err();
    assert_eq!(refused(0).retry_after, 1);
    assert_eq!(refused(300 * MS).retry_after, 1);
    assert_eq!(refused(0).limit, Which::Total);
    // Ten seconds a token: 9.5 s to wait says 10.
    let slow = InboundRateLimit::buckets(
        &RateLimit {
            identity: Some(Limit {
                requests_per_second: 1,
                burst: Some(1),
            }),
            ..RateLimit::default()
        },
        64,
    );
    assert_eq!(slow.check_at(None, 0), Ok(()));
    let l = slow.check_at(None, 500 * MS).unwrap_err();
    assert_eq!((l.limit, l.retry_after), (Which::Identity, 1));
}

fn id(s: &str) -> Arc<str> {
    Arc::from(s)
}

fn spec() -> RateLimit {
    RateLimit {
        total: Some(Limit {
            requests_per_second: 100,
            burst: Some(30),
        }),
        identity: Some(Limit {
            requests_per_second: 10,
            burst: Some(5),
        }),
        overrides: vec![Override {
            identities: vec!["spiffe://td/ns/a/sa/vip".into()],
            requests_per_second: 20,
            burst: Some(10),
        }],
    }
}

#[test]
fn each_identity_its_own_bucket_unverified_callers_share_one() {
    let rl = InboundRateLimit::buckets(&spec(), 64);
    let (a, b, vip) = (
        id("spiffe://td/ns/a/sa/a"),
        id("spiffe://td/ns/a/sa/b"),
        id("spiffe://td/ns/a/sa/vip"),
    );
    let count = |who: Option<&Arc<str>>| (0..100).filter(|_| rl.check_at(who, 0).is_ok()).count();
    assert_eq!(count(Some(&a)), 5);
    assert_eq!(count(Some(&b)), 5);
    // Another Arc of the same identity (another connection) is the same caller.
    assert_eq!(count(Some(&id("spiffe://td/ns/a/sa/a"))), 0);
    assert_eq!(count(Some(&vip)), 10);
    assert_eq!(count(None), 5);
    assert_eq!(count(None), 0, "unverified callers share one bucket");
    // Refused callers gave their total tokens back: 25 of 30 are used.
    let c = id("spiffe://td/ns/a/sa/c");
    assert_eq!(count(Some(&c)), 5);
    assert_eq!(
        rl.check_at(Some(&id("spiffe://td/x")), 0),
        Err(Limited {
            limit: Which::Total,
            retry_after: 1
        })
    );
    assert_eq!(
        rl.check_at(Some(&a), 0).unwrap_err().limit,
        Which::Total,
        "the total is checked first"
    );
    // One second later every bucket is full again, never fuller.
    assert_eq!(
        (0..100)
            .filter(|_| rl.check_at(Some(&a), NANOS).is_ok())
            .count(),
        5
    );
    assert_eq!(
        (0..100)
            .filter(|_| rl.check_at(Some(&vip), NANOS).is_ok())
            .count(),
        10
    );
}

#[test]
fn the_identity_map_stays_bounded() {
    let spec = RateLimit {
        identity: Some(Limit {
            requests_per_second: 1,
            burst: Some(2),
        }),
        ..RateLimit::default()
    };
    let max = 32;
    let rl = InboundRateLimit::buckets(&spec, max);
    let ids = rl.identities.as_ref().unwrap();
    let per_shard = max.div_ceil(SHARDS);
    // A thousand busy callers at once: each shard keeps `per_shard`, the
    // rest share the overflow bucket (burst 2).
    let admitted = (0..1000)
        .filter(|i| {
            rl.check_at(Some(&id(&format!("spiffe://td/c{i}"))), 0)
                .is_ok()
        })
        .count();
    assert!(ids.len() <= SHARDS * per_shard, "{}", ids.len());
    assert_eq!(admitted, ids.len() + 2);
    // Ten seconds on, every bucket is idle: new callers replace them.
    let later = (0..1000)
        .filter(|i| {
            rl.check_at(Some(&id(&format!("spiffe://td/n{i}"))), 10 * NANOS)
                .is_ok()
        })
        .count();
    assert!(ids.len() <= SHARDS * per_shard, "{}", ids.len());
    assert!(later >= ids.len(), "{later} {}", ids.len());
}

#[test]
fn concurrent_takes_never_exceed_rate_times_time_plus_burst() {
    // 8 threads share a simulated clock that every request moves on by 10 µs:
    // whatever the interleaving, admissions <= burst + rate * elapsed.
    let b = Bucket::new(1000, 50);
    let clock = AtomicU64::new(0);
    let admitted = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..8 {
            s.spawn(|| {
                for _ in 0..20_000 {
                    let now = clock.fetch_add(10_000, Ordering::Relaxed);
                    if b.take(now).is_ok() {
                        admitted.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
    });
    let elapsed = clock.load(Ordering::Relaxed);
    let bound = 50 + elapsed / b.interval;
    let n = admitted.load(Ordering::Relaxed) as u64;
    assert!(n <= bound, "{n} admitted, bound {bound}");
    // And the arrivals (100 000 a second against 1000) kept it saturated.
    assert!(n * 100 >= bound * 95, "{n} admitted, bound {bound}");
}

#[test]
fn concurrent_callers_through_the_limiter_keep_their_shares() {
    let rl = InboundRateLimit::buckets(&spec(), 64);
    let clock = AtomicU64::new(0);
    let names = ["spiffe://td/ns/a/sa/a", "spiffe://td/ns/a/sa/vip"];
    let counts: Vec<AtomicUsize> = (0..names.len()).map(|_| AtomicUsize::new(0)).collect();
    std::thread::scope(|s| {
        for t in 0..8 {
            let (rl, clock, counts) = (&rl, &clock, &counts);
            s.spawn(move || {
                let who = id(names[t % names.len()]);
                for _ in 0..5_000 {
                    let now = clock.fetch_add(20_000, Ordering::Relaxed);
                    if rl.check_at(Some(&who), now).is_ok() {
                        counts[t % names.len()].fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
    });
    let elapsed = clock.load(Ordering::Relaxed) as f64 / NANOS as f64;
    let a = counts[0].load(Ordering::Relaxed) as f64;
    let vip = counts[1].load(Ordering::Relaxed) as f64;
    assert!(a <= 5.0 + 10.0 * elapsed, "{a}");
    assert!(vip <= 10.0 + 20.0 * elapsed, "{vip}");
    // Threads share the clock, so a caller whose threads were descheduled
    // while others moved it on got less: only its burst is certain.
    assert!(a >= 5.0 && vip >= 10.0, "{a} {vip}");
}

#[test]
fn a_reload_with_the_same_block_keeps_the_buckets() {
    let yaml = |rps: u32| {
        format!(
            "apiVersion: weft.dev/v1alpha1\nkind: Backend\nmetadata: {{name: reviews, namespace: shop}}\nspec:\n  endpoints: [{{address: \"127.0.0.1:9\"}}]\n---\napiVersion: weft.dev/v1alpha1\nkind: TrafficPolicy\nmetadata: {{name: reviews, namespace: shop}}\nspec:\n  targetRef: {{kind: Service, name: reviews}}\n  rateLimit:\n    total: {{requestsPerSecond: {rps}}}\n"
        )
    };
    let load =
        |text: String| weft_mesh::config::load_sources(vec![("mesh.yaml".into(), text)]).unwrap();
    let metrics = Metrics::new();
    let first = compile(&load(yaml(5)), Some("reviews"), "shop", &metrics, None).unwrap();
    assert!(compile(&load(yaml(5)), Some("ratings"), "shop", &metrics, None).is_none());
    assert!(compile(&load(yaml(5)), Some("reviews"), "default", &metrics, None).is_none());
    assert!(compile(&load(yaml(5)), None, "shop", &metrics, None).is_none());
    for _ in 0..5 {
        assert!(first.check(None).is_ok());
    }
    assert!(first.check(None).is_err());
    let same = compile(
        &load(yaml(5)),
        Some("reviews"),
        "shop",
        &metrics,
        Some(&first),
    )
    .unwrap();
    assert!(Arc::ptr_eq(&first, &same));
    assert!(
        same.check(None).is_err(),
        "the emptied bucket is still empty"
    );
    let changed = compile(
        &load(yaml(6)),
        Some("reviews"),
        "shop",
        &metrics,
        Some(&first),
    )
    .unwrap();
    assert!(!Arc::ptr_eq(&first, &changed));
    assert!(changed.check(None).is_ok());
    let text = metrics.encode();
    assert!(
        text.contains("weft_rate_limited_total{limit=\"total\"} 2"),
        "{text}"
    );
}
