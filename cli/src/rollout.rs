//! `canary-split rollout`: raises `canary_weight` step by step, judging the canary against primary
//! through Prometheus after each step, and rolls back to 0 the moment it fails, or when it cannot
//! be judged within a bounded wait.

use std::io::Write as _;
use std::time::{Duration, Instant};

use crate::config_file::{read_one_config, routes_for};
use crate::flags::Flags;
use crate::judge::{judge, percent, Criteria, Figures, Verdict};
use crate::preset::{Preset, Releases};
use crate::prometheus::Prometheus;
use crate::target::Writer;
use crate::weight::{parse_steps, Weight};

pub const VALUED: &[&str] = &[
    "--prometheus",
    "--config",
    "--host",
    "--preset",
    "--selector",
    "--primary",
    "--canary",
    "--steps",
    "--interval",
    "--window",
    "--poll",
    "--max-hold",
    "--min-requests",
    "--max-error-increase",
    "--error-ratio-floor",
    "--max-latency-increase",
    "--latency-floor",
    "--after-write",
];
pub const SWITCHES: &[&str] = &["--kubectl", "--run"];

/// The ramp and how each step is judged.
pub struct Plan {
    pub steps: Vec<Weight>,
    /// How long each step runs before its verdict.
    pub interval: Duration,
    /// The most recent traffic a verdict looks at (never traffic from before the step).
    pub window: Duration,
    /// How often Prometheus is asked, during a step and while holding.
    pub poll: Duration,
    /// How long a step may go on without a verdict after its interval before the rollout gives up.
    pub max_hold: Duration,
    pub criteria: Criteria,
}

pub fn rollout(args: &[String]) -> Result<String, String> {
    let flags = Flags::parse(args, VALUED, SWITCHES)?;
    let config_path = flags.required("--config")?;
    let (found, config) = read_one_config(config_path, "rollout")?;
    let (route_index, route) = match routes_for(&config, flags.get("--host"))?.as_slice() {
        [one] => *one,
        several => {
            let hosts: Vec<&str> = several.iter().map(|(_, r)| r.host.as_str()).collect();
            return Err(format!(
                "{config_path}: pick the route with --host ({})",
                hosts.join(", ")
            ));
        }
    };
    if flags.has("--run") && !flags.has("--kubectl") {
        return Err("--run goes with --kubectl".to_owned());
    }
    let target = Writer::for_config(config_path, &found.origin, flags.has("--kubectl"), flags.has("--run"))?;
    let json = found.json.as_deref().map_err(String::clone)?;
    let writer = Writer::new(target, route_index, json)?.after_write(flags.get("--after-write"))?;
    let plan = plan(&flags)?;
    let current = Weight::from_basis_points(route.canary_basis_points).unwrap_or(Weight::ZERO);

    if flags.has("--kubectl") && !flags.has("--run") {
        return Ok(kubectl_plan(&writer, &plan, &route.host, current));
    }

    let preset = Preset::parse(flags.get("--preset").unwrap_or("istio"))?;
    let releases = Releases::new(
        preset,
        flags.get("--selector"),
        flags.required("--primary")?,
        flags.required("--canary")?,
    )?;
    let prometheus = Prometheus::new(flags.required("--prometheus")?);
    // Nothing is written unless the rollout can be watched from the start.
    match prometheus.query_value(&releases.primary.series()) {
        Err(error) => return Err(format!("not started: {error}")),
        Ok(None | Some(0.0)) => {
            return Err(format!(
                "not started: Prometheus has no series for primary ({}): check --primary, --preset and --selector",
                releases.primary.series()
            ))
        }
        Ok(Some(_)) => {}
    }

    println!(
        "rollout of {} from canary_weight {current}: {} %, {} a step",
        route.host,
        plan.steps.iter().map(Weight::to_string).collect::<Vec<_>>().join(" → "),
        humantime::format_duration(plan.interval)
    );
    println!(
        "judged on the {} preset, primary {:?} against canary {:?}; writing to {}",
        preset.name(),
        releases.primary_name,
        releases.canary_name,
        writer.describe()
    );
    println!("{}", describe_criteria(&plan));
    run(&plan, &writer, &mut |window| releases.figures(&prometheus, window))
}

fn plan(flags: &Flags) -> Result<Plan, String> {
    let steps = parse_steps(flags.required("--steps")?)?;
    let interval = flags
        .duration("--interval")?
        .ok_or_else(|| "--interval is required".to_owned())?;
    let positive = |name: &str, value: Option<Duration>, default: Duration| match value {
        Some(duration) if duration.is_zero() => Err(format!("{name} must be more than 0")),
        Some(duration) => Ok(duration),
        None => Ok(default),
    };
    let interval = positive("--interval", Some(interval), interval)?;
    let defaults = Criteria::default();
    let percent_flag = |name: &str, default: f64| -> Result<f64, String> {
        Ok(flags.number(name)?.map_or(default, |percent| percent / 100.0))
    };
    Ok(Plan {
        steps,
        interval,
        window: positive("--window", flags.duration("--window")?, interval)?,
        poll: positive(
            "--poll",
            flags.duration("--poll")?,
            (interval / 10).clamp(Duration::from_secs(1), Duration::from_secs(30)),
        )?,
        max_hold: flags.duration("--max-hold")?.unwrap_or(interval),
        criteria: Criteria {
            min_requests: flags.number("--min-requests")?.unwrap_or(defaults.min_requests),
            max_error_increase: percent_flag("--max-error-increase", defaults.max_error_increase)?,
            error_ratio_floor: percent_flag("--error-ratio-floor", defaults.error_ratio_floor)?,
            max_latency_increase: percent_flag("--max-latency-increase", defaults.max_latency_increase)?,
            latency_floor_ms: flags
                .duration("--latency-floor")?
                .map_or(defaults.latency_floor_ms, |floor| floor.as_secs_f64() * 1000.0),
        },
    })
}

fn describe_criteria(plan: &Plan) -> String {
    let c = &plan.criteria;
    format!(
        "a step passes with at least {:.0} requests per release in the last {} of it, a canary error ratio at most \
         {:.2} × primary's (or {}), and a canary p95 at most {:.2} × primary's (or {:.0} ms); \
         without a verdict it holds for up to {} more, then rolls back",
        c.min_requests,
        humantime::format_duration(plan.window),
        1.0 + c.max_error_increase,
        percent(c.error_ratio_floor),
        1.0 + c.max_latency_increase,
        c.latency_floor_ms,
        humantime::format_duration(plan.max_hold)
    )
}

/// Without `--run`, the kubectl target only prints what a rollout would apply.
fn kubectl_plan(writer: &Writer, plan: &Plan, host: &str, current: Weight) -> String {
    let mut out = format!("# {host}: canary_weight is {current} in the config; one command per step\n");
    for (number, &step) in plan.steps.iter().enumerate() {
        out += &format!(
            "# step {}/{}: {step} %\n{}\n",
            number + 1,
            plan.steps.len(),
            writer.kubectl_command(step)
        );
    }
    out += &format!("# roll back\n{}\n", writer.kubectl_command(Weight::ZERO));
    out
}

/// The figures of the last `window` of traffic, or why there are none.
type Observe<'a> = dyn FnMut(Duration) -> Result<Figures, String> + 'a;

/// Runs the plan: each step writes its weight, waits out the interval (rolling back at once if
/// the canary already fails), then judges; a step without a verdict is held, never advanced.
pub fn run(plan: &Plan, writer: &Writer, observe: &mut Observe) -> Result<String, String> {
    let started = Instant::now();
    let say = |message: &str| {
        println!("[{:>4}s] {message}", started.elapsed().as_secs());
        let _ = std::io::stdout().flush();
    };
    let total = plan.steps.len();
    for (number, &weight) in plan.steps.iter().enumerate() {
        let step = format!("step {}/{total} at {weight} %", number + 1);
        let written = match writer.write(weight) {
            Ok(written) => written,
            Err(error) => return Err(roll_back(writer, &say, &format!("{step}: {error}"))),
        };
        say(&format!("{step}: wrote {written}"));
        let step_start = Instant::now();
        let window = |now: Instant| plan.window.min(now - step_start);

        // During the interval only a failure counts: a pass needs the whole interval.
        while step_start.elapsed() < plan.interval {
            std::thread::sleep(plan.poll.min(plan.interval.saturating_sub(step_start.elapsed())));
            if step_start.elapsed() >= plan.interval {
                break;
            }
            if let Ok(figures) = observe(window(Instant::now())) {
                if let Verdict::Fail { reasons } = judge(&figures, &plan.criteria, weight) {
                    say(&format!("{step}: {}", describe_figures(&figures)));
                    return Err(roll_back(writer, &say, &format!("{step}: {}", reasons.join("; "))));
                }
            }
        }

        let hold_until = Instant::now() + plan.max_hold;
        loop {
            let verdict = match observe(window(Instant::now())) {
                Ok(figures) => {
                    say(&format!("{step}: {}", describe_figures(&figures)));
                    judge(&figures, &plan.criteria, weight)
                }
                Err(error) => Verdict::Hold { reason: error },
            };
            match verdict {
                Verdict::Pass { notes } => {
                    let notes = if notes.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", notes.join("; "))
                    };
                    say(&format!("{step}: pass{notes}"));
                    break;
                }
                Verdict::Fail { reasons } => {
                    return Err(roll_back(writer, &say, &format!("{step}: {}", reasons.join("; "))));
                }
                Verdict::Hold { reason } if Instant::now() >= hold_until => {
                    let why = format!(
                        "{step}: no verdict after holding {}: {reason}",
                        humantime::format_duration(plan.max_hold)
                    );
                    return Err(roll_back(writer, &say, &why));
                }
                Verdict::Hold { reason } => {
                    let left = hold_until.saturating_duration_since(Instant::now());
                    say(&format!(
                        "{step}: hold: {reason} (retrying for up to {})",
                        humantime::format_duration(Duration::from_secs(left.as_secs()))
                    ));
                    std::thread::sleep(plan.poll.min(left));
                }
            }
        }
    }
    Ok(completion(plan.steps.last().copied().unwrap_or(Weight::ZERO)))
}

/// What a rollout that passed every step says: the weight its last step wrote.
fn completion(last: Weight) -> String {
    if last == Weight::FULL {
        "rollout complete: the canary takes 100 %. To finish, make primary run the canary's release, then set \
         canary_weight back to 0.\n"
            .to_owned()
    } else {
        format!("rollout complete: the canary takes {last} %, the last step's weight; it stays there.\n")
    }
}

fn describe_figures(figures: &Figures) -> String {
    format!("primary {} | canary {}", figures.primary, figures.canary)
}

/// Sets the weight back to 0 and returns the rollout's error: why, and whether that worked.
fn roll_back(writer: &Writer, say: &dyn Fn(&str), why: &str) -> String {
    say(&format!("fail: {why}"));
    match writer.write(Weight::ZERO) {
        Ok(written) => {
            say(&format!("rolled back: wrote {written}"));
            format!("rolled back to canary_weight 0: {why}")
        }
        Err(error) => format!("{why}; and the rollback failed, set canary_weight to 0 by hand: {error}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_complete_rollout_says_the_weight_it_left() {
        assert!(completion(Weight::FULL).starts_with("rollout complete: the canary takes 100 %. To finish"));
        let partial = completion(Weight::parse("25").unwrap());
        assert_eq!(
            partial,
            "rollout complete: the canary takes 25 %, the last step's weight; it stays there.\n"
        );
    }
}
