//! `canary-split status`: for each split host, the weight configured and the one the filter
//! reports, the canary's observed share, requests by reason, each release's errors and mean latency, the
//! verdict a rollout would give now, and the alerts firing.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use canary_split::config::Route;

use crate::config_file::{read_one_config, routes_for};
use crate::flags::Flags;
use crate::judge::{judge, milliseconds, percent, Criteria, Verdict};
use crate::preset::{Preset, Releases};
use crate::prometheus::{quoted, range, Alert, Prometheus};
use crate::weight::Weight;

const DEFAULT_WINDOW: Duration = Duration::from_secs(300);

pub const VALUED: &[&str] = &[
    "--prometheus",
    "--config",
    "--host",
    "--preset",
    "--selector",
    "--primary",
    "--canary",
    "--window",
    "--min-requests",
];

pub fn status(args: &[String]) -> Result<String, String> {
    let flags = Flags::parse(args, VALUED, &[])?;
    let prometheus = Prometheus::new(flags.required("--prometheus")?);
    let config_path = flags.required("--config")?;
    let (found, config) = read_one_config(config_path, "status")?;
    let routes = routes_for(&config, flags.get("--host"))?;
    let preset = Preset::parse(flags.get("--preset").unwrap_or("istio"))?;
    let window = flags.duration("--window")?.unwrap_or(DEFAULT_WINDOW);
    let releases = match (flags.get("--primary"), flags.get("--canary")) {
        (Some(primary), Some(canary)) if routes.len() == 1 => {
            Some(Releases::new(preset, flags.get("--selector"), primary, canary)?)
        }
        (Some(_), Some(_)) => return Err("--primary and --canary name one route's releases: add --host".to_owned()),
        (None, None) => None,
        _ => return Err("--primary and --canary go together".to_owned()),
    };
    let criteria = Criteria {
        min_requests: flags
            .number("--min-requests")?
            .unwrap_or(Criteria::default().min_requests),
        ..Criteria::default()
    };

    let mut alerts = prometheus.alerts()?;
    let mut out = format!(
        "{}, over the last {} ({} preset), config {}\n",
        prometheus.url(),
        humantime::format_duration(window),
        preset.name(),
        found.label
    );
    for (_, route) in &routes {
        out.push('\n');
        let weight = Weight::from_basis_points(route.canary_basis_points).unwrap_or(Weight::ZERO);
        line(&mut out, route.host.as_str(), "");
        line(&mut out, "  configured weight", &format!("{weight} %"));
        line(&mut out, "  filter reports", &reported_weight(&prometheus, route)?);
        line(
            &mut out,
            "  requests by reason",
            &requests_by_reason(&prometheus, route, window)?,
        );
        match &releases {
            Some(releases) => release_figures(&mut out, &prometheus, releases, weight, window, &criteria)?,
            None => line(
                &mut out,
                "  releases",
                &format!(
                    "give --primary and --canary (their {} values) for share, errors and latency",
                    preset.release_label()
                ),
            ),
        }
        let names: Vec<&str> = [Some(route.host.as_str())]
            .into_iter()
            .chain(
                releases
                    .iter()
                    .flat_map(|r| [Some(r.primary_name.as_str()), Some(r.canary_name.as_str())]),
            )
            .chain([route.primary.host.as_deref(), route.canary.host.as_deref()])
            .flatten()
            .collect();
        let (mine, others): (Vec<Alert>, Vec<Alert>) = alerts
            .into_iter()
            .partition(|alert| alert.labels.values().any(|value| names.contains(&value.as_str())));
        alerts = others;
        line(&mut out, "  alerts", &describe_alerts(&mine));
    }
    if !alerts.is_empty() {
        out.push('\n');
        line(&mut out, "other alerts", &describe_alerts(&alerts));
    }
    Ok(out)
}

fn line(out: &mut String, label: &str, value: &str) {
    if value.is_empty() {
        let _ = writeln!(out, "{label}");
    } else {
        let _ = writeln!(out, "{label:<25}{value}");
    }
}

/// What `canary_split_canary_weight_basis_points` says, per gateway replica.
fn reported_weight(prometheus: &Prometheus, route: &Route) -> Result<String, String> {
    let samples = prometheus.query(&format!(
        "canary_split_canary_weight_basis_points{{host={}}}",
        quoted(&route.host)
    ))?;
    if samples.is_empty() {
        return Ok("no canary_split_canary_weight_basis_points series".to_owned());
    }
    let mut weights: Vec<String> = samples
        .iter()
        .map(|s| {
            s.value
                .and_then(|v| (0.0..=10_000.0).contains(&v).then_some(v as u16))
                .and_then(Weight::from_basis_points)
                .map_or_else(|| "?".to_owned(), |w| format!("{w} %"))
        })
        .collect();
    weights.sort();
    weights.dedup();
    let gateways = samples.len();
    Ok(match weights.as_slice() {
        [weight] => format!("{weight} on {gateways} gateway series"),
        _ => format!(
            "{} across {gateways} gateway series (an update is spreading?)",
            weights.join(", ")
        ),
    })
}

/// `canary_split_requests_total` over the window, by release and reason.
fn requests_by_reason(prometheus: &Prometheus, route: &Route, window: Duration) -> Result<String, String> {
    let samples = prometheus.query(&format!(
        "sum by (split_release, reason) (increase(canary_split_requests_total{{host={}}}[{}]))",
        quoted(&route.host),
        range(window)
    ))?;
    if samples.is_empty() {
        return Ok("no canary_split_requests_total series".to_owned());
    }
    let mut by_release: BTreeMap<String, Vec<(String, f64)>> = BTreeMap::new();
    for sample in samples {
        let label = |name: &str| sample.labels.get(name).cloned().unwrap_or_else(|| "?".to_owned());
        by_release
            .entry(label("split_release"))
            .or_default()
            .push((label("reason"), sample.value.unwrap_or(0.0)));
    }
    // Primary before canary, pin before sticky before random: the order the filter decides in.
    let rank = |name: &str, order: &[&str]| {
        (
            order.iter().position(|n| *n == name).unwrap_or(order.len()),
            name.to_owned(),
        )
    };
    let mut by_release: Vec<(String, Vec<(String, f64)>)> = by_release.into_iter().collect();
    by_release.sort_by_key(|(release, _)| rank(release, &["primary", "canary"]));
    let releases: Vec<String> = by_release
        .into_iter()
        .map(|(release, mut reasons)| {
            reasons.sort_by_key(|(reason, _)| rank(reason, &["pin", "sticky", "random"]));
            let counts: Vec<String> = reasons.iter().map(|(reason, n)| format!("{reason} {n:.0}")).collect();
            format!("{release}: {}", counts.join(", "))
        })
        .collect();
    Ok(releases.join("; "))
}

fn release_figures(
    out: &mut String,
    prometheus: &Prometheus,
    releases: &Releases,
    weight: Weight,
    window: Duration,
    criteria: &Criteria,
) -> Result<(), String> {
    let figures = releases.figures(prometheus, window)?;
    let total = figures.primary.requests + figures.canary.requests;
    let share = if total > 0.0 {
        format!("{} of {total:.0} requests", percent(figures.canary.requests / total))
    } else {
        "no requests".to_owned()
    };
    line(out, "  observed canary share", &share);
    let _ = writeln!(
        out,
        "  {:<9}{:>9}{:>8}{:>13}{:>11}  {}",
        "release", "requests", "5xx", "error ratio", "mean", releases.label
    );
    for (release, figures, name) in [
        ("primary", &figures.primary, &releases.primary_name),
        ("canary", &figures.canary, &releases.canary_name),
    ] {
        let mean = figures.mean_ms.map_or_else(|| "-".to_owned(), milliseconds);
        let _ = writeln!(
            out,
            "  {release:<9}{:>9.0}{:>8.0}{:>13}{mean:>11}  {name}",
            figures.requests,
            figures.errors,
            percent(figures.error_ratio())
        );
    }
    let verdict = match judge(&figures, criteria, weight) {
        Verdict::Pass { notes } if notes.is_empty() => "pass".to_owned(),
        Verdict::Pass { notes } => format!("pass ({})", notes.join("; ")),
        Verdict::Fail { reasons } => format!("fail: {}", reasons.join("; ")),
        Verdict::Hold { reason } => format!("no verdict: {reason}"),
    };
    line(out, "  rollout verdict now", &verdict);
    Ok(())
}

fn describe_alerts(alerts: &[Alert]) -> String {
    if alerts.is_empty() {
        return "none".to_owned();
    }
    let described: Vec<String> = alerts
        .iter()
        .map(|alert| match &alert.active_at {
            // To the second: 2026-11-23T18:09:04.49478441Z -> 2026-11-23T18:09:04Z.
            Some(since) => match since.split_once('.') {
                Some((seconds, _)) => format!("{} ({} since {seconds}Z)", alert.name(), alert.state),
                None => format!("{} ({} since {since})", alert.name(), alert.state),
            },
            None => format!("{} ({})", alert.name(), alert.state),
        })
        .collect();
    described.join(", ")
}
