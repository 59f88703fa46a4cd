//! The per-minute rows of the soak report, the Markdown tables and the
//! verdict.

use crate::sample::Sample;
use crate::{Opts, Tally, MAX_LAG};
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// What the previous minute ended with, for per-minute differences.
#[derive(Default)]
pub(crate) struct Carry {
    last: Vec<Option<Sample>>,
    events_ms: u128,
}

/// One minute of the report.
pub(crate) struct Row {
    minute: u32,
    t: Tally,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    /// Per sidecar: medians of the minute's samples, and whether it lived.
    rss_mib: Vec<f64>,
    fds: Vec<f64>,
    tasks: Vec<f64>,
    threads: Vec<f64>,
    alive: Vec<bool>,
    /// Per sidecar, over the minute: config versions applied, configs
    /// rejected, certificate renewals, failed TLS handshakes, 5xx
    /// answered inbound (the app died or was down: what retries hide).
    applied: Vec<f64>,
    inbound_5xx: Vec<f64>,
    rejected: Vec<f64>,
    renewals: Vec<u32>,
    tls_failed: Vec<f64>,
    /// Per sidecar: CPU time over the minute, in % of one core.
    cpu_pct: Vec<f64>,
    /// The machine's 1-minute load average at the minute's end.
    load1: f64,
    /// Of the first sidecar (the client's): retries sent, ejections.
    retries: f64,
    ejections: f64,
    /// run.sh's events in the minute, by kind.
    events: BTreeMap<String, u64>,
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

impl Row {
    pub(crate) fn new(
        minute: u32,
        mut t: Tally,
        samples: &[Vec<Sample>],
        carry: &mut Carry,
        o: &Opts,
        wall0: u128,
    ) -> Row {
        t.lat_us.sort_unstable();
        let q = |p: f64| {
            let n = t.lat_us.len();
            if n == 0 {
                return 0.0;
            }
            let i = ((n as f64 * p).ceil() as usize).clamp(1, n) - 1;
            f64::from(t.lat_us[i]) / 1000.0
        };
        let (p50_ms, p99_ms, max_ms) = (q(0.5), q(0.99), q(1.0));
        carry.last.resize(samples.len(), None);
        let mut row = Row {
            minute,
            p50_ms,
            p99_ms,
            max_ms,
            rss_mib: vec![],
            fds: vec![],
            tasks: vec![],
            threads: vec![],
            alive: vec![],
            applied: vec![],
            rejected: vec![],
            renewals: vec![],
            tls_failed: vec![],
            inbound_5xx: vec![],
            cpu_pct: vec![],
            load1: std::fs::read_to_string("/proc/loadavg")
                .ok()
                .and_then(|l| l.split_whitespace().next()?.parse().ok())
                .unwrap_or(f64::NAN),
            retries: 0.0,
            ejections: 0.0,
            events: BTreeMap::new(),
            t,
        };
        for (i, ss) in samples.iter().enumerate() {
            let live: Vec<&Sample> = ss.iter().filter(|s| s.alive).collect();
            let med = |f: &dyn Fn(&Sample) -> f64| median(live.iter().map(|s| f(s)).collect());
            row.rss_mib.push(med(&|s| s.rss_kib / 1024.0));
            row.fds.push(med(&|s| s.fds));
            row.tasks.push(med(&|s| {
                s.metrics.get("tasks").copied().unwrap_or(f64::NAN)
            }));
            row.threads.push(med(&|s| s.threads));
            row.alive.push(!ss.is_empty() && live.len() == ss.len());
            let m = |s: &Sample, k: &str| s.metrics.get(k).copied().unwrap_or(0.0);
            let first = carry.last[i]
                .clone()
                .or_else(|| live.first().map(|s| (*s).clone()));
            let end = live.last().map(|s| (*s).clone());
            let delta = |k: &str| match (&first, &end) {
                (Some(a), Some(b)) => m(b, k) - m(a, k),
                _ => 0.0,
            };
            row.applied.push(delta("config_version"));
            row.rejected.push(delta("rejected"));
            row.inbound_5xx.push(delta("inbound_5xx"));
            row.tls_failed
                .push(delta("handshakes") - delta("handshakes_ok"));
            row.cpu_pct.push(match (&first, &end) {
                (Some(a), Some(b)) if b.at > a.at => {
                    100.0 * (m(b, "cpu") - m(a, "cpu")) / (b.at - a.at).as_secs_f64()
                }
                _ => f64::NAN,
            });
            if i == 0 {
                row.retries = delta("retries");
                row.ejections = delta("ejections");
            }
            let mut expiry = first.as_ref().map_or(0.0, |s| m(s, "cert_expiry"));
            let mut renewals = 0;
            for s in &live {
                let e = m(s, "cert_expiry");
                if e != expiry && expiry != 0.0 {
                    renewals += 1;
                }
                expiry = e;
            }
            row.renewals.push(renewals);
            if end.is_some() {
                carry.last[i] = end;
            }
        }
        let until = wall0 + 60_000 * u128::from(minute);
        if let Some(text) = o
            .events
            .as_ref()
            .and_then(|p| std::fs::read_to_string(p).ok())
        {
            for line in text.lines() {
                let mut f = line.split_whitespace();
                let (Some(ms), Some(kind)) =
                    (f.next().and_then(|v| v.parse::<u128>().ok()), f.next())
                else {
                    continue;
                };
                if ms > carry.events_ms && ms <= until {
                    *row.events.entry(kind.to_string()).or_default() += 1;
                }
            }
        }
        carry.events_ms = until;
        row
    }

    fn failed(&self) -> u64 {
        self.t.failed.values().sum()
    }

    pub(crate) fn progress(&self, o: &Opts) -> String {
        format!(
            "soak: minute {}/{}: {} sent ({:.0}/s), {} failed, p50 {:.2} ms, p99 {:.2} ms, RSS MiB {}",
            self.minute, o.minutes, self.t.sent, self.t.sent as f64 / 60.0, self.failed(),
            self.p50_ms, self.p99_ms, slash(&self.rss_mib, 1),
        )
    }

    pub(crate) fn json(&self, o: &Opts) -> String {
        let names: Vec<&str> = o.sidecars.iter().map(|s| s.name.as_str()).collect();
        serde_json::json!({
            "minute": self.minute, "sent": self.t.sent, "ok": self.t.ok, "get": self.t.get,
            "post": self.t.post, "skipped": self.t.skipped, "failed": self.t.failed,
            "p50_ms": self.p50_ms, "p99_ms": self.p99_ms, "max_ms": self.max_ms,
            "by_app": self.t.by_app, "generation": self.t.generation, "sidecars": names,
            "rss_mib": self.rss_mib, "fds": self.fds, "tasks": self.tasks, "threads": self.threads,
            "alive": self.alive, "config_applied": self.applied, "config_rejected": self.rejected,
            "cert_renewals": self.renewals, "tls_handshake_failures": self.tls_failed,
            "inbound_5xx": self.inbound_5xx, "cpu_pct": self.cpu_pct, "load1": self.load1,
            "retries": self.retries, "ejections": self.ejections, "events": self.events,
        })
        .to_string()
    }
}

fn slash(v: &[f64], decimals: usize) -> String {
    v.iter()
        .map(|x| {
            if x.is_nan() {
                "-".into()
            } else {
                format!("{x:.decimals$}")
            }
        })
        .collect::<Vec<_>>()
        .join(" / ")
}

pub(crate) fn report(o: &Opts, rows: &[Row]) -> (String, bool) {
    let names: Vec<&str> = o.sidecars.iter().map(|s| s.name.as_str()).collect();
    let who = names.join(" / ");
    let mut r = String::new();
    let _ = writeln!(
        r,
        "## Soak: {} min at {} req/s ({} % POST of {} bytes), {} connections\n",
        o.minutes, o.rps, o.post_percent, o.body, o.conns
    );
    for note in &o.notes {
        let _ = writeln!(r, "{note}  ");
    }
    if !o.notes.is_empty() {
        r.push('\n');
    }
    let _ = writeln!(r, "| min | sent | req/s | failed | failures | p50 ms | p99 ms | max ms | RSS MiB ({who}) | fds ({who}) | tasks ({who}) |");
    let _ = writeln!(
        r,
        "| ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | --- | --- | --- |"
    );
    for w in rows {
        let fails: Vec<String> =
            w.t.failed
                .iter()
                .map(|(k, n)| format!("{n}× {k}"))
                .collect();
        let _ = writeln!(
            r,
            "| {} | {} | {:.0} | {} | {} | {:.2} | {:.2} | {:.1} | {} | {} | {} |",
            w.minute,
            w.t.sent,
            w.t.sent as f64 / 60.0,
            w.failed(),
            if fails.is_empty() {
                "—".into()
            } else {
                fails.join("; ")
            },
            w.p50_ms,
            w.p99_ms,
            w.max_ms,
            slash(&w.rss_mib, 1),
            slash(&w.fds, 0),
            slash(&w.tasks, 0)
        );
    }
    let _ = writeln!(
        r,
        "\nWhat happened meanwhile, per minute (several numbers: per sidecar, {who}; CPU % of one core; load: the machine's 1-minute load average):\n"
    );
    let _ = writeln!(r, "| min | GET / POST | answered by | skipped | config writes | versions applied | rejected | app kills / starts | inbound 5xx | retries ({c}) | ejections ({c}) | cert renewals | TLS handshake failures | threads | CPU % | load |",
        c = names.first().unwrap_or(&"-"));
    let _ = writeln!(
        r,
        "| ---: | --- | --- | ---: | ---: | --- | --- | --- | --- | ---: | ---: | --- | --- | --- | --- | ---: |"
    );
    for w in rows {
        let ev = |k: &str| w.events.get(k).copied().unwrap_or(0);
        let apps: Vec<String> = w.t.by_app.iter().map(|(k, n)| format!("{k} {n}")).collect();
        let renewals: Vec<f64> = w.renewals.iter().map(|&n| f64::from(n)).collect();
        let _ = writeln!(
            r,
            "| {} | {} / {} | {} | {} | {} | {} | {} | {} / {} | {} | {:.0} | {:.0} | {} | {} | {} | {} | {:.2} |",
            w.minute,
            w.t.get,
            w.t.post,
            apps.join(", "),
            w.t.skipped,
            ev("config"),
            slash(&w.applied, 0),
            slash(&w.rejected, 0),
            ev("kill"),
            ev("start"),
            slash(&w.inbound_5xx, 0),
            w.retries,
            w.ejections,
            slash(&renewals, 0),
            slash(&w.tls_failed, 0),
            slash(&w.threads, 0),
            slash(&w.cpu_pct, 0),
            w.load1
        );
    }
    let (pass, verdict) = verdict(o, rows);
    let _ = writeln!(
        r,
        "\n### Verdict: {}\n\n{verdict}",
        if pass { "PASS" } else { "FAIL" }
    );
    (r, pass)
}

#[derive(Default)]
struct Verdict {
    failed: bool,
    text: String,
}

impl Verdict {
    fn check(&mut self, ok: bool, line: String) {
        self.failed |= !ok;
        let _ = writeln!(
            self.text,
            "- {} {line}",
            if ok { "ok:" } else { "**FAIL:**" }
        );
    }

    fn note(&mut self, line: String) {
        let _ = writeln!(self.text, "- {line}");
    }
}

fn verdict(o: &Opts, rows: &[Row]) -> (bool, String) {
    let mut v = Verdict::default();
    let sent: u64 = rows.iter().map(|w| w.t.sent).sum();
    let failed: u64 = rows.iter().map(Row::failed).sum();
    let mut kinds: BTreeMap<&str, u64> = BTreeMap::new();
    for w in rows {
        for (k, n) in &w.t.failed {
            *kinds.entry(k).or_default() += n;
        }
    }
    let kinds: Vec<String> = kinds.iter().map(|(k, n)| format!("{n}× {k}")).collect();
    v.check(failed == 0, format!(
        "{failed} of {sent} requests failed{}; every fault injected here (a killed app's in-flight and refused requests, config pushes, certificate rotation) is one the TrafficPolicy promises to hide",
        if kinds.is_empty() { String::new() } else { format!(" ({})", kinds.join("; ")) }));
    let secs = 60.0 * f64::from(o.minutes);
    let rate = sent as f64 / secs;
    let skipped: u64 = rows.iter().map(|w| w.t.skipped).sum();
    v.note(format!(
        "{} achieved {rate:.0} req/s of the {} asked{}",
        if rate >= 0.95 * o.rps {
            "ok:"
        } else {
            "note: target rate not sustained:"
        },
        o.rps,
        if skipped > 0 {
            format!(
                " ({skipped} requests skipped: the generator was over {} s behind)",
                MAX_LAG.as_secs()
            )
        } else {
            String::new()
        }
    ));
    for (i, sc) in o.sidecars.iter().enumerate() {
        let dead = rows
            .iter()
            .filter(|w| !w.alive.get(i).copied().unwrap_or(false))
            .count();
        v.check(
            dead == 0,
            format!(
                "{} (pid {}) ran throughout{}",
                sc.name,
                sc.pid,
                if dead > 0 {
                    format!(": gone in {dead} minute(s)")
                } else {
                    String::new()
                }
            ),
        );
    }
    growth(o, rows, &mut v);
    let each = |f: &dyn Fn(&Row, usize) -> f64| -> Vec<f64> {
        (0..o.sidecars.len())
            .map(|i| rows.iter().map(|w| f(w, i)).sum())
            .collect()
    };
    let renewals = each(&|w, i| f64::from(w.renewals[i]));
    let applied = each(&|w, i| w.applied[i]);
    let rejected = each(&|w, i| w.rejected[i]);
    let tls_failed = each(&|w, i| w.tls_failed[i]);
    let event = |k: &str| -> u64 {
        rows.iter()
            .map(|w| w.events.get(k).copied().unwrap_or(0))
            .sum()
    };
    let (kills, starts, writes) = (event("kill"), event("start"), event("config"));
    let mins = f64::from(o.minutes);
    let retries: f64 = rows.iter().map(|w| w.retries).sum();
    let hidden: f64 = rows.iter().flat_map(|w| w.inbound_5xx.iter()).sum();
    let want_renewals = f64::from(o.minutes.saturating_sub(1).max(1));
    let all = |v: &[f64], ok: &dyn Fn(f64) -> bool| !v.is_empty() && v.iter().all(|&x| ok(x));
    v.check(
        kills as f64 >= 5.0 * mins
            && starts + 1 >= kills
            && writes as f64 >= 11.0 * mins
            && all(&applied, &|a| a >= 11.0 * mins)
            && all(&rejected, &|r| r == 0.0)
            && all(&renewals, &|r| r >= want_renewals)
            && retries > 0.0,
        format!(
            "the faults happened: {kills} app kills ({starts} restarts; want ≥ {:.0}), {writes} config writes applied {} times and rejected {} times (want ≥ {:.0} applied each, none rejected), certificate renewals {} (want ≥ {want_renewals:.0} each); and requests met them: {retries:.0} retries sent by {} (want > 0), {hidden:.0} 5xx answered by the app sidecars",
            5.0 * mins,
            slash(&applied, 0),
            slash(&rejected, 0),
            11.0 * mins,
            slash(&renewals, 0),
            o.sidecars.first().map_or("-", |s| s.name.as_str())
        ),
    );
    v.check(
        all(&tls_failed, &|f| f == 0.0),
        format!(
            "no failed mTLS handshake between the sidecars, certificate renewals included: {}",
            slash(&tls_failed, 0)
        ),
    );
    (!v.failed, v.text)
}

/// No growth after the warm-up: each sidecar's last minute against the
/// first minute after `--warmup` (the medians of their samples).
fn growth(o: &Opts, rows: &[Row], v: &mut Verdict) {
    let n = rows.len();
    if n < 2 {
        v.check(
            false,
            "growth not judged: the run needs 2 minutes or more".into(),
        );
        return;
    }
    // A run too short for the whole warm-up keeps two minutes to compare.
    let warm = (o.warmup as usize).min(n - 2);
    let (b, l) = (&rows[warm], &rows[n - 1]);
    let (bm, lm) = (b.minute, l.minute);
    if warm < o.warmup as usize {
        v.note(format!(
            "note: this run is too short for the {}-minute warm-up: growth is judged from minute {bm}, and a rise in it may still be warm-up",
            o.warmup
        ));
    }
    for (i, sc) in o.sidecars.iter().enumerate() {
        let (rb, rl) = (b.rss_mib[i], l.rss_mib[i]);
        let allowed = (rb * o.rss_pct / 100.0).max(o.rss_mib);
        v.check(
            rl <= rb + allowed,
            format!(
                "{} RSS {rb:.1} → {rl:.1} MiB, minute {bm} → {lm} (allowed +{allowed:.1}: +{} % or +{} MiB, the larger)",
                sc.name, o.rss_pct, o.rss_mib
            ),
        );
        let (fb, fl) = (b.fds[i], l.fds[i]);
        v.check(
            fl <= fb + o.fd_slack,
            format!(
                "{} open fds {fb:.0} → {fl:.0} (allowed +{})",
                sc.name, o.fd_slack
            ),
        );
        let (tb, tl) = (b.tasks[i], l.tasks[i]);
        let slack = (tb * o.task_pct / 100.0).max(20.0);
        // A count not read (NaN) fails: no number, no judgement.
        v.check(
            tl <= tb + slack,
            format!(
                "{} tasks {tb:.0} → {tl:.0} (allowed +{slack:.0}: +{} % or +20, the larger)",
                sc.name, o.task_pct
            ),
        );
    }
}
