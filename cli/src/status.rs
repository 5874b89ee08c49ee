//! `canary-split status`: for each split host, the weight configured and the one the filter
//! reports, the guard on each gateway series, the canary's observed share, requests by reason, each
//! release's errors and mean latency, the verdict a rollout would give now, and the alerts firing;
//! as text, or as JSON for scripts.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use canary_split::config::Route;
use serde::{Serialize, Serializer};

use crate::config_file::{read_one_config, routes_for};
use crate::guard::{self, GuardSeries};
use crate::judge::{judge, milliseconds, percent, Criteria, ReleaseFigures, Verdict};
use crate::preset::{Preset, Releases};
use crate::prometheus::{quoted, range, Alert, Prometheus};
use crate::weight::Weight;
use crate::{non_negative, positive_duration, OneOf, Output};

/// Show what Prometheus says about each split host
#[derive(clap::Args)]
#[command(after_help = format!("For each route (or the one --host names): the configured weight, the weight the filter \
reports per gateway series, the guard (for a route with one: tripped or not on each gateway series, and its trips \
over --window), requests by release and reason; with --primary and --canary, over --window, the canary's \
observed share, each release's requests, 5xx and mean latency, and the verdict a rollout would give now; last, the alerts \
pending or firing. NAME is the release's destination_service (istio preset) or envoy_cluster_name (envoy preset).

Examples:
  canary-split status --prometheus http://prometheus-operated.monitoring:9090 --config istio/wasmplugin.yaml
  canary-split status --prometheus http://localhost:9090 --config istio/wasmplugin.yaml \\
    --primary sklearn-primary-predictor.models.svc.cluster.local \\
    --canary sklearn-canary-predictor.models.svc.cluster.local --output json

{}", crate::EXIT_STATUS))]
pub struct StatusArgs {
    /// Prometheus's base URL
    #[arg(long, value_name = "URL")]
    pub prometheus: String,
    /// The filter config: JSON, WasmPlugin YAML or ECDS file, holding one config
    #[arg(long, value_name = "FILE")]
    pub config: String,
    /// Only the route with this host
    #[arg(long)]
    pub host: Option<String>,
    /// Primary's release name, for share, errors and latency (with --canary and one route)
    #[arg(long, value_name = "NAME", requires = "canary")]
    pub primary: Option<String>,
    /// The canary's release name (with --primary)
    #[arg(long, value_name = "NAME", requires = "primary")]
    pub canary: Option<String>,
    /// Which metrics tell the releases apart
    #[arg(long, default_value = "istio", value_parser = OneOf(&["istio", "envoy"]))]
    pub preset: String,
    /// Label matchers replacing the preset's gateway selector, without braces: 'job="gateway"'
    #[arg(long, value_name = "MATCHERS")]
    pub selector: Option<String>,
    /// The traffic looked at: the last DURATION
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = positive_duration)]
    pub window: Duration,
    /// Requests each release needs in the window for a verdict
    #[arg(long, value_name = "N", default_value = "100", value_parser = non_negative, allow_negative_numbers = true)]
    pub min_requests: f64,
    /// text, or json (its shape is in the README)
    #[arg(long, value_enum, default_value = "text")]
    pub output: Output,
}

/// What `status` found, as `--output json` prints it; the text says the same.
#[derive(Serialize)]
struct Status {
    prometheus: String,
    #[serde(rename = "window_seconds", serialize_with = "as_seconds")]
    window: Duration,
    preset: &'static str,
    /// Where the config was found.
    config: String,
    routes: Vec<RouteStatus>,
    /// Alerts that name none of the routes' hosts or releases.
    other_alerts: Vec<AlertStatus>,
}

#[derive(Serialize)]
struct RouteStatus {
    host: String,
    #[serde(serialize_with = "as_percent")]
    configured_weight: Weight,
    /// What each gateway series of `canary_split_canary_weight_basis_points` says (null: out of range).
    #[serde(serialize_with = "as_percents")]
    reported_weights: Vec<Option<Weight>>,
    /// For a route with a guard in the config (null without).
    guard: Option<GuardStatus>,
    /// `canary_split_requests_total` over the window, primary first, in the order the filter decides.
    requests: Vec<ReasonCount>,
    /// With `--primary` and `--canary`.
    releases: Option<ReleasesStatus>,
    alerts: Vec<AlertStatus>,
}

#[derive(Serialize)]
struct GuardStatus {
    /// `canary_split_guard_tripped` on each gateway series.
    series: Vec<GuardSeries>,
    /// `canary_split_guard_trips_total` over the window, summed over the gateway series.
    trips: f64,
}

#[derive(Serialize)]
struct ReasonCount {
    release: String,
    reason: String,
    requests: f64,
}

#[derive(Serialize)]
struct ReleasesStatus {
    /// The label that tells them apart: destination_service or envoy_cluster_name.
    label: &'static str,
    /// The canary's part of both releases' requests (null without requests).
    canary_share: Option<f64>,
    primary: ReleaseStatus,
    canary: ReleaseStatus,
    verdict: VerdictStatus,
}

#[derive(Serialize)]
struct ReleaseStatus {
    name: String,
    requests: f64,
    errors: f64,
    error_ratio: f64,
    mean_ms: Option<f64>,
}

#[derive(Serialize)]
struct VerdictStatus {
    /// pass, fail, or hold (no verdict yet).
    outcome: &'static str,
    /// A pass's notes, a failure's reasons, or why there is no verdict.
    details: Vec<String>,
}

#[derive(Serialize)]
struct AlertStatus {
    name: String,
    /// pending or firing.
    state: String,
    active_at: Option<String>,
}

fn as_seconds<S: Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_f64(duration.as_secs_f64())
}

fn as_percent<S: Serializer>(weight: &Weight, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_f64(f64::from(weight.basis_points()) / 100.0)
}

fn as_percents<S: Serializer>(weights: &[Option<Weight>], serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_seq(
        weights
            .iter()
            .map(|weight| weight.map(|w| f64::from(w.basis_points()) / 100.0)),
    )
}

pub fn status(args: &StatusArgs) -> Result<String, String> {
    let prometheus = Prometheus::new(&args.prometheus);
    let (found, config) = read_one_config(&args.config, "status")?;
    let routes = routes_for(&config, args.host.as_deref())?;
    let preset = Preset::parse(&args.preset)?;
    let window = args.window;
    let releases = match args.primary.as_deref().zip(args.canary.as_deref()) {
        Some((primary, canary)) if routes.len() == 1 => {
            Some(Releases::new(preset, args.selector.as_deref(), primary, canary)?)
        }
        Some(_) => return Err("--primary and --canary name one route's releases: add --host".to_owned()),
        None => None,
    };
    let criteria = Criteria {
        min_requests: args.min_requests,
        ..Criteria::default()
    };

    let mut alerts = prometheus.alerts()?;
    // Prometheus lists them in no fixed order: by name, so that two runs read alike.
    alerts.sort_by(|a, b| (a.name(), &a.active_at).cmp(&(b.name(), &b.active_at)));
    let mut status = Status {
        prometheus: prometheus.url().to_owned(),
        window,
        preset: preset.name(),
        config: found.label,
        routes: Vec::new(),
        other_alerts: Vec::new(),
    };
    for (_, route) in &routes {
        let weight = Weight::from_basis_points(route.canary_basis_points).unwrap_or(Weight::ZERO);
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
        status.routes.push(RouteStatus {
            host: route.host.clone(),
            configured_weight: weight,
            reported_weights: reported_weights(&prometheus, route)?,
            guard: route
                .guard
                .as_ref()
                .map(|_| guard_status(&prometheus, route, window))
                .transpose()?,
            requests: requests_by_reason(&prometheus, route, window)?,
            releases: releases
                .as_ref()
                .map(|releases| release_figures(&prometheus, releases, weight, window, &criteria))
                .transpose()?,
            alerts: mine.iter().map(alert_status).collect(),
        });
    }
    status.other_alerts = alerts.iter().map(alert_status).collect();
    match args.output {
        Output::Text => Ok(text(&status, preset)),
        Output::Json => serde_json::to_string_pretty(&status)
            .map(|json| json + "\n")
            .map_err(|e| e.to_string()),
    }
}

fn text(status: &Status, preset: Preset) -> String {
    let mut out = format!(
        "{}, over the last {} ({} preset), config {}\n",
        status.prometheus,
        humantime::format_duration(status.window),
        status.preset,
        status.config
    );
    for route in &status.routes {
        out.push('\n');
        line(&mut out, route.host.as_str(), "");
        line(
            &mut out,
            "  configured weight",
            &format!("{} %", route.configured_weight),
        );
        line(
            &mut out,
            "  filter reports",
            &describe_reported(&route.reported_weights),
        );
        line(
            &mut out,
            "  guard",
            &describe_guard(route.guard.as_ref(), status.window),
        );
        line(&mut out, "  requests by reason", &describe_requests(&route.requests));
        match &route.releases {
            Some(releases) => describe_releases(&mut out, releases),
            None => line(
                &mut out,
                "  releases",
                &format!(
                    "give --primary and --canary (their {} values) for share, errors and latency",
                    preset.release_label()
                ),
            ),
        }
        line(&mut out, "  alerts", &describe_alerts(&route.alerts));
    }
    if !status.other_alerts.is_empty() {
        out.push('\n');
        line(&mut out, "other alerts", &describe_alerts(&status.other_alerts));
    }
    out
}

fn line(out: &mut String, label: &str, value: &str) {
    if value.is_empty() {
        let _ = writeln!(out, "{label}");
    } else {
        let _ = writeln!(out, "{label:<25}{value}");
    }
}

/// What `canary_split_canary_weight_basis_points` says, per gateway replica.
fn reported_weights(prometheus: &Prometheus, route: &Route) -> Result<Vec<Option<Weight>>, String> {
    let samples = prometheus.query(&format!(
        "canary_split_canary_weight_basis_points{{host={}}}",
        quoted(&route.host)
    ))?;
    Ok(samples
        .iter()
        .map(|s| {
            s.value
                .and_then(|v| (0.0..=10_000.0).contains(&v).then_some(v as u16))
                .and_then(Weight::from_basis_points)
        })
        .collect())
}

fn describe_reported(reported: &[Option<Weight>]) -> String {
    if reported.is_empty() {
        return "no canary_split_canary_weight_basis_points series".to_owned();
    }
    let mut weights: Vec<String> = reported
        .iter()
        .map(|weight| weight.map_or_else(|| "?".to_owned(), |w| format!("{w} %")))
        .collect();
    weights.sort();
    weights.dedup();
    let gateways = reported.len();
    match weights.as_slice() {
        [weight] => format!("{weight} on {gateways} gateway series"),
        _ => format!(
            "{} across {gateways} gateway series (an update is spreading?)",
            weights.join(", ")
        ),
    }
}

fn guard_status(prometheus: &Prometheus, route: &Route, window: Duration) -> Result<GuardStatus, String> {
    Ok(GuardStatus {
        series: guard::guard_series(prometheus, &route.host)?,
        trips: guard::trips(prometheus, &route.host, window)?,
    })
}

fn describe_guard(status: Option<&GuardStatus>, window: Duration) -> String {
    match status {
        None => "none on this route".to_owned(),
        Some(GuardStatus { series, trips }) => format!(
            "{}; {trips:.0} trip{} in the last {}",
            guard::describe(series),
            if (trips - 1.0).abs() < 0.5 { "" } else { "s" },
            humantime::format_duration(window)
        ),
    }
}

/// `canary_split_requests_total` over the window, by release and reason.
fn requests_by_reason(prometheus: &Prometheus, route: &Route, window: Duration) -> Result<Vec<ReasonCount>, String> {
    let samples = prometheus.query(&format!(
        "sum by (split_release, reason) (increase(canary_split_requests_total{{host={}}}[{}]))",
        quoted(&route.host),
        range(window)
    ))?;
    let label =
        |labels: &BTreeMap<String, String>, name: &str| labels.get(name).cloned().unwrap_or_else(|| "?".to_owned());
    let mut counts: Vec<ReasonCount> = samples
        .iter()
        .map(|sample| ReasonCount {
            release: label(&sample.labels, "split_release"),
            reason: label(&sample.labels, "reason"),
            requests: sample.value.unwrap_or(0.0),
        })
        .collect();
    // Primary before canary, pin before sticky before random: the order the filter decides in; a
    // tripped guard's requests last.
    let rank = |name: &str, order: &[&str]| {
        (
            order.iter().position(|n| *n == name).unwrap_or(order.len()),
            name.to_owned(),
        )
    };
    counts.sort_by_key(|count| {
        (
            rank(&count.release, &["primary", "canary"]),
            rank(&count.reason, &["pin", "sticky", "random", "guard"]),
        )
    });
    Ok(counts)
}

fn describe_requests(counts: &[ReasonCount]) -> String {
    if counts.is_empty() {
        return "no canary_split_requests_total series".to_owned();
    }
    let mut releases: Vec<(&str, Vec<String>)> = Vec::new();
    for count in counts {
        let described = format!("{} {:.0}", count.reason, count.requests);
        match releases.last_mut() {
            Some((release, reasons)) if *release == count.release => reasons.push(described),
            _ => releases.push((&count.release, vec![described])),
        }
    }
    let releases: Vec<String> = releases
        .into_iter()
        .map(|(release, reasons)| format!("{release}: {}", reasons.join(", ")))
        .collect();
    releases.join("; ")
}

fn release_figures(
    prometheus: &Prometheus,
    releases: &Releases,
    weight: Weight,
    window: Duration,
    criteria: &Criteria,
) -> Result<ReleasesStatus, String> {
    let figures = releases.figures(prometheus, window)?;
    let total = figures.primary.requests + figures.canary.requests;
    let release = |name: &str, figures: &ReleaseFigures| ReleaseStatus {
        name: name.to_owned(),
        requests: figures.requests,
        errors: figures.errors,
        error_ratio: figures.error_ratio(),
        mean_ms: figures.mean_ms,
    };
    let verdict = match judge(&figures, criteria, weight) {
        Verdict::Pass { notes } => VerdictStatus {
            outcome: "pass",
            details: notes,
        },
        Verdict::Fail { reasons } => VerdictStatus {
            outcome: "fail",
            details: reasons,
        },
        Verdict::Hold { reason } => VerdictStatus {
            outcome: "hold",
            details: vec![reason],
        },
    };
    Ok(ReleasesStatus {
        label: releases.label,
        canary_share: (total > 0.0).then(|| figures.canary.requests / total),
        primary: release(&releases.primary_name, &figures.primary),
        canary: release(&releases.canary_name, &figures.canary),
        verdict,
    })
}

fn describe_releases(out: &mut String, releases: &ReleasesStatus) {
    let share = match releases.canary_share {
        Some(share) => format!(
            "{} of {:.0} requests",
            percent(share),
            releases.primary.requests + releases.canary.requests
        ),
        None => "no requests".to_owned(),
    };
    line(out, "  observed canary share", &share);
    let _ = writeln!(
        out,
        "  {:<9}{:>9}{:>8}{:>13}{:>11}  {}",
        "release", "requests", "5xx", "error ratio", "mean", releases.label
    );
    for (role, release) in [("primary", &releases.primary), ("canary", &releases.canary)] {
        let mean = release.mean_ms.map_or_else(|| "-".to_owned(), milliseconds);
        let _ = writeln!(
            out,
            "  {role:<9}{:>9.0}{:>8.0}{:>13}{mean:>11}  {}",
            release.requests,
            release.errors,
            percent(release.error_ratio),
            release.name
        );
    }
    let details = releases.verdict.details.join("; ");
    let verdict = match releases.verdict.outcome {
        "pass" if details.is_empty() => "pass".to_owned(),
        "pass" => format!("pass ({details})"),
        "fail" => format!("fail: {details}"),
        _ => format!("no verdict: {details}"),
    };
    line(out, "  rollout verdict now", &verdict);
}

fn alert_status(alert: &Alert) -> AlertStatus {
    AlertStatus {
        name: alert.name().to_owned(),
        state: alert.state.clone(),
        active_at: alert.active_at.clone(),
    }
}

fn describe_alerts(alerts: &[AlertStatus]) -> String {
    if alerts.is_empty() {
        return "none".to_owned();
    }
    let described: Vec<String> = alerts
        .iter()
        .map(|alert| match &alert.active_at {
            // To the second: 2026-11-23T18:09:04.49478441Z -> 2026-11-23T18:09:04Z.
            Some(since) => match since.split_once('.') {
                Some((seconds, _)) => format!("{} ({} since {seconds}Z)", alert.name, alert.state),
                None => format!("{} ({} since {since})", alert.name, alert.state),
            },
            None => format!("{} ({})", alert.name, alert.state),
        })
        .collect();
    described.join(", ")
}
