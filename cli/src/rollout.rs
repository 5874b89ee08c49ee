//! `canary-split rollout`: raises `canary_weight` step by step, judging the canary against primary
//! through Prometheus after each step, and rolls back to 0 the moment it fails (or the filter's
//! guard trips), or when it cannot be judged within a bounded wait.

use std::io::Write as _;
use std::time::{Duration, Instant};

use canary_split::metrics::GUARD_TRIPPED;

use crate::config_file::{read_one_config, routes_for};
use crate::guard;
use crate::judge::{judge, percent, Criteria, Figures, Verdict};
use crate::preset::{Preset, Releases};
use crate::prometheus::Prometheus;
use crate::target::Writer;
use crate::weight::{parse_steps, Weight};
use crate::{duration, missing, non_negative, positive_duration, Failure, OneOf};

/// Raise canary_weight step by step, judging each step; roll back on failure
#[derive(clap::Args)]
#[command(
    override_usage = "canary-split rollout --config <FILE> --steps <PERCENTS> --interval <DURATION> \
(--prometheus <URL> --primary <NAME> --canary <NAME> | --kubectl) [OPTIONS]",
    after_help = format!("Sets canary_weight to each step, waits --interval, judges the canary against primary and \
advances; rolls back to 0 and exits 1 when it fails, when the filter's guard trips on any gateway series (a route with \
a guard: at every poll), or when Prometheus cannot judge it (figures, or a guard it cannot read) within --max-hold. Writes the \
one canary_weight line of --config (WasmPlugin YAML or JSON), or an ECDS file, then runs --after-write; with --kubectl \
prints the kubectl patch commands (no Prometheus needed), with --run runs them. NAME is the release's \
destination_service (istio preset) or envoy_cluster_name (envoy preset).

Examples:
  canary-split rollout --config istio/wasmplugin.yaml --kubectl --steps 10,25,50,100 --interval 5m
  canary-split rollout --prometheus http://prometheus-operated.monitoring:9090 --config istio/wasmplugin.yaml \\
    --primary sklearn-primary-predictor.models.svc.cluster.local \\
    --canary sklearn-canary-predictor.models.svc.cluster.local \\
    --steps 10,25,50,100 --interval 5m --after-write 'git commit -qam \"canary at $CANARY_WEIGHT %\" && git push -q'

{}", crate::EXIT_STATUS)
)]
pub struct RolloutArgs {
    /// Prometheus's base URL
    #[arg(long, value_name = "URL")]
    pub prometheus: Option<String>,
    /// The filter config to ramp: WasmPlugin YAML, JSON or ECDS file, holding one config
    #[arg(long, value_name = "FILE")]
    pub config: String,
    /// The route to ramp, when the config has several
    #[arg(long)]
    pub host: Option<String>,
    /// Primary's release name
    #[arg(long, value_name = "NAME")]
    pub primary: Option<String>,
    /// The canary's release name
    #[arg(long, value_name = "NAME")]
    pub canary: Option<String>,
    /// The weights to step through, in percent, each above the one before: 10,25,50,100
    #[arg(long, value_name = "PERCENTS")]
    pub steps: Option<String>,
    /// How long each step runs before its verdict
    #[arg(long, value_name = "DURATION", value_parser = positive_duration)]
    pub interval: Option<Duration>,
    /// Which metrics tell the releases apart
    #[arg(long, default_value = "istio", value_parser = OneOf(&["istio", "envoy"]))]
    pub preset: String,
    /// Label matchers replacing the preset's gateway selector, without braces: 'job="gateway"'
    #[arg(long, value_name = "MATCHERS")]
    pub selector: Option<String>,
    /// The most recent traffic a verdict looks at [default: --interval]
    #[arg(long, value_name = "DURATION", value_parser = positive_duration)]
    pub window: Option<Duration>,
    /// How often Prometheus is asked [default: --interval / 10, within 1s..30s]
    #[arg(long, value_name = "DURATION", value_parser = positive_duration)]
    pub poll: Option<Duration>,
    /// How long a step may go without a verdict after its interval before rolling back [default: --interval]
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    pub max_hold: Option<Duration>,
    /// Requests each release needs in the window for a verdict
    #[arg(long, value_name = "N", default_value = "100", value_parser = non_negative, allow_negative_numbers = true)]
    pub min_requests: f64,
    /// The canary fails when its 5xx ratio is more than this many percent above primary's...
    #[arg(long, value_name = "PERCENT", default_value = "50", value_parser = non_negative, allow_negative_numbers = true)]
    pub max_error_increase: f64,
    /// ...and above this ratio, in percent
    #[arg(long, value_name = "PERCENT", default_value = "1", value_parser = non_negative, allow_negative_numbers = true)]
    pub error_ratio_floor: f64,
    /// The canary fails when its mean latency is more than this many percent above primary's...
    #[arg(long, value_name = "PERCENT", default_value = "30", value_parser = non_negative, allow_negative_numbers = true)]
    pub max_latency_increase: f64,
    /// ...and above this
    #[arg(long, value_name = "DURATION", default_value = "0ms", value_parser = duration)]
    pub latency_floor: Duration,
    /// A shell command run after each write, rollback included (CANARY_WEIGHT is set): e.g. commit and push
    #[arg(long, value_name = "COMMAND")]
    pub after_write: Option<String>,
    /// Patch the WasmPlugin with kubectl instead: print the commands, one per step and the rollback
    #[arg(long)]
    pub kubectl: bool,
    /// With --kubectl: run them, judging each step
    #[arg(long)]
    pub run: bool,
}

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

pub fn rollout(args: &RolloutArgs) -> Result<String, Failure> {
    let config_path = &args.config;
    let (found, config) = read_one_config(config_path, "rollout")?;
    let (route_index, route) = match routes_for(&config, args.host.as_deref())?.as_slice() {
        [one] => *one,
        several => {
            let hosts: Vec<&str> = several.iter().map(|(_, r)| r.host.as_str()).collect();
            return Err(format!("{config_path}: pick the route with --host ({})", hosts.join(", ")).into());
        }
    };
    if args.run && !args.kubectl {
        return Err("--run goes with --kubectl".to_owned().into());
    }
    let target = Writer::for_config(config_path, &found.origin, args.kubectl, args.run)?;
    let json = found.json.as_deref().map_err(String::clone)?;
    let writer = Writer::new(target, route_index, json)?.after_write(args.after_write.as_deref())?;
    let plan = plan(args)?;
    let current = Weight::from_basis_points(route.canary_basis_points).unwrap_or(Weight::ZERO);

    if args.kubectl && !args.run {
        return Ok(kubectl_plan(&writer, &plan, &route.host, current));
    }

    let preset = Preset::parse(&args.preset)?;
    let needed = |value: &Option<String>, flag: &str| {
        value.clone().ok_or_else(|| {
            missing(
                "rollout",
                &format!("{flag} is required to judge the canary (only --kubectl without --run does without it)"),
            )
        })
    };
    let (primary, canary) = (
        needed(&args.primary, "--primary <NAME>")?,
        needed(&args.canary, "--canary <NAME>")?,
    );
    let releases = Releases::new(preset, args.selector.as_deref(), &primary, &canary)?;
    let prometheus = Prometheus::new(&needed(&args.prometheus, "--prometheus <URL>")?);
    // Nothing is written unless the rollout can be watched from the start.
    match prometheus.query_value(&releases.primary.series()) {
        Err(error) => return Err(format!("not started: {error}").into()),
        Ok(None | Some(0.0)) => {
            return Err(format!(
                "not started: Prometheus has no series for primary ({}): check --primary, --preset and --selector",
                releases.primary.series()
            )
            .into())
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
    let host = route.host.as_str();
    let mut guard_tripped = || -> Result<Option<String>, String> {
        let series = guard::guard_series(&prometheus, host).map_err(|error| guard_unreadable(&error))?;
        if series.is_empty() {
            return Err(guard_unreadable(&format!(
                "Prometheus has no {GUARD_TRIPPED} series for {host}"
            )));
        }
        Ok(guard::tripped(&series).map(|tripped| guard_failure(&tripped)))
    };
    if route.guard.is_some() {
        // A guard Prometheus refuses to read stops the rollout before it writes, as primary's
        // series do. No series yet is no refusal: the guard may come with the first write (added
        // to the config with the rollout); until it is seen, every step holds.
        let series = guard::guard_series(&prometheus, host)
            .map_err(|error| format!("not started: {}", guard_unreadable(&error)))?;
        // A trip from before the rollout would fail its first step at once: the canary failed at
        // the weight set by hand, and writing a new weight would end the trip (any change to the
        // route does), not fix the canary.
        if let Some(tripped) = guard::tripped(&series) {
            return Err(format!(
                "not started: {}. Set canary_weight to 0 (which ends the trip) and fix the canary first",
                guard_failure(&tripped)
            )
            .into());
        }
        println!(
            "the filter's guard on {host}: a trip on any gateway series ({}) fails the step at once",
            guard::describe(&series)
        );
    }
    let mut no_guard = || Ok(None);
    let guard: &mut GuardCheck = if route.guard.is_some() {
        &mut guard_tripped
    } else {
        &mut no_guard
    };
    Ok(run(
        &plan,
        &writer,
        &mut |window| releases.figures(&prometheus, window),
        guard,
    )?)
}

/// Why a step fails on a tripped guard.
fn guard_failure(tripped: &str) -> String {
    format!("the filter's guard {tripped}: it took the canary out of the split")
}

/// Why a step holds, or a rollout does not start, when the guard cannot be read.
fn guard_unreadable(why: &str) -> String {
    format!("the filter's guard cannot be read: {why}")
}

/// The plan the flags describe. --steps and --interval are needed in every case, but checked only
/// after the config, so that a config the rollout cannot write is reported first.
fn plan(args: &RolloutArgs) -> Result<Plan, Failure> {
    let steps = args
        .steps
        .as_deref()
        .ok_or_else(|| missing("rollout", "--steps <PERCENTS> is required"))?;
    let steps = parse_steps(steps)?;
    let interval = args
        .interval
        .ok_or_else(|| missing("rollout", "--interval <DURATION> is required"))?;
    Ok(Plan {
        steps,
        interval,
        window: args.window.unwrap_or(interval),
        poll: args
            .poll
            .unwrap_or((interval / 10).clamp(Duration::from_secs(1), Duration::from_secs(30))),
        max_hold: args.max_hold.unwrap_or(interval),
        criteria: Criteria {
            min_requests: args.min_requests,
            max_error_increase: args.max_error_increase / 100.0,
            error_ratio_floor: args.error_ratio_floor / 100.0,
            max_latency_increase: args.max_latency_increase / 100.0,
            latency_floor_ms: args.latency_floor.as_secs_f64() * 1000.0,
        },
    })
}

fn describe_criteria(plan: &Plan) -> String {
    let c = &plan.criteria;
    format!(
        "a step passes with at least {:.0} requests per release in the last {} of it, a canary error ratio at most \
         {:.2} × primary's (or {}), and a canary mean latency at most {:.2} × primary's (or {:.0} ms); \
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

/// Why the filter's guard fails the step now (it has tripped), or `None`; an error when the guard
/// cannot be read, which holds a step as figures that cannot be read do.
type GuardCheck<'a> = dyn FnMut() -> Result<Option<String>, String> + 'a;

/// Runs the plan: each step writes its weight, waits out the interval (rolling back at once if
/// the canary already fails or the guard trips), then judges; a step without a verdict is held,
/// never advanced.
pub fn run(
    plan: &Plan,
    writer: &Writer,
    observe: &mut Observe,
    guard_tripped: &mut GuardCheck,
) -> Result<String, String> {
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
            if let Ok(Some(why)) = guard_tripped() {
                return Err(roll_back(writer, &say, &format!("{step}: {why}")));
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
            let guard = guard_tripped();
            if let Ok(Some(why)) = &guard {
                return Err(roll_back(writer, &say, &format!("{step}: {why}")));
            }
            let verdict = match observe(window(Instant::now())) {
                Ok(figures) => {
                    say(&format!("{step}: {}", describe_figures(&figures)));
                    judge(&figures, &plan.criteria, weight)
                }
                Err(error) => Verdict::Hold { reason: error },
            };
            // A guard that cannot be read is not a guard that has not tripped: no pass without it.
            let verdict = match (verdict, guard) {
                (Verdict::Pass { .. }, Err(reason)) => Verdict::Hold { reason },
                (verdict, _) => verdict,
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
    use clap::Parser;

    use super::*;
    use crate::Cli;

    #[test]
    fn the_flags_defaults_are_the_criteria_of_the_shipped_alerts() {
        let cli = Cli::try_parse_from([
            "canary-split",
            "rollout",
            "--config",
            "c.yaml",
            "--steps",
            "10",
            "--interval",
            "5m",
        ])
        .unwrap();
        let crate::Command::Rollout(args) = cli.command else {
            panic!("not a rollout");
        };
        let plan = plan(&args).ok().unwrap();
        let defaults = Criteria::default();
        let close = |a: f64, b: f64| (a - b).abs() < 1e-9;
        assert!(close(plan.criteria.min_requests, defaults.min_requests));
        assert!(close(plan.criteria.max_error_increase, defaults.max_error_increase));
        assert!(close(plan.criteria.error_ratio_floor, defaults.error_ratio_floor));
        assert!(close(plan.criteria.max_latency_increase, defaults.max_latency_increase));
        assert!(close(plan.criteria.latency_floor_ms, defaults.latency_floor_ms));
        assert_eq!(
            (plan.window, plan.max_hold),
            (args.interval.unwrap(), args.interval.unwrap())
        );
        assert_eq!(plan.poll, Duration::from_secs(30));
    }

    use crate::judge::ReleaseFigures;
    use crate::target::Target;

    /// A rollout of 10 → 50 % on a JSON config in a temporary file, steps of 300 ms polled every
    /// 20 ms, on healthy figures; `guard` answers each read of the guard, told whether the file
    /// holds `trips_at` (never if `None`). Returns the outcome, the file at the end, and how often
    /// figures were asked for once the file held `trips_at`.
    fn run_with(
        name: &str,
        trips_at: Option<&str>,
        guard: &mut dyn FnMut(bool) -> Result<Option<String>, String>,
    ) -> (Result<String, String>, String, usize) {
        let path = std::env::temp_dir().join(format!("canary-split-{name}-{}.json", std::process::id()));
        let config = r#"{"routes": [{"host": "shop.example.com", "primary": {}, "canary": {}, "canary_weight": 0,
            "guard": {}}]}"#;
        std::fs::write(&path, config).unwrap();
        let path_text = path.to_str().unwrap().to_owned();
        let writer = Writer::new(Target::File { path: path_text }, 0, config.as_bytes()).unwrap();
        let plan = Plan {
            steps: parse_steps("10,50").unwrap(),
            interval: Duration::from_millis(300),
            window: Duration::from_millis(300),
            poll: Duration::from_millis(20),
            max_hold: Duration::from_millis(300),
            criteria: Criteria {
                min_requests: 10.0,
                ..Criteria::default()
            },
        };
        let healthy = |requests| ReleaseFigures {
            requests,
            errors: 0.0,
            mean_ms: Some(1.0),
        };
        let holds = |weight: &str| {
            let written = std::fs::read_to_string(&path).unwrap_or_default();
            written.contains(&format!(r#""canary_weight": {weight},"#))
        };
        let mut observed_after_trip = 0;
        let result = run(
            &plan,
            &writer,
            &mut |_| {
                observed_after_trip += usize::from(trips_at.is_some_and(holds));
                Ok(Figures {
                    primary: healthy(900.0),
                    canary: healthy(100.0),
                })
            },
            &mut || guard(trips_at.is_some_and(holds)),
        );
        let written = std::fs::read_to_string(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        (result, written, observed_after_trip)
    }

    /// The guard trips once the file holds `trips_at`.
    fn run_with_guard(name: &str, trips_at: Option<&str>) -> (Result<String, String>, String, usize) {
        run_with(name, trips_at, &mut |tripped| {
            Ok(tripped.then(|| "the filter's guard tripped on 1 of 2 gateway series (instance=\"a\")".to_owned()))
        })
    }

    #[test]
    fn a_tripped_guard_fails_the_step_at_once_and_rolls_back() {
        let (result, written, observed_after_trip) = run_with_guard("tripped", Some("50"));
        assert_eq!(
            result.unwrap_err(),
            "rolled back to canary_weight 0: step 2/2 at 50 %: the filter's guard tripped on 1 of 2 gateway series \
             (instance=\"a\")"
        );
        assert!(written.contains(r#""canary_weight": 0,"#), "{written}");
        // At the first poll of the step: before its figures are ever asked for.
        assert_eq!(observed_after_trip, 0);
    }

    #[test]
    fn an_untripped_guard_lets_the_rollout_through() {
        let (result, written, _) = run_with_guard("untripped", None);
        assert!(result.unwrap().starts_with("rollout complete"));
        assert!(written.contains(r#""canary_weight": 50,"#), "{written}");
    }

    /// What the rollout's reading of the guard says when Prometheus refuses the query.
    const REFUSED: &str = "the filter's guard cannot be read: http://127.0.0.1:9090/api/v1/query: HTTP 422: \
                           query processing would load too many samples into memory in query execution";

    #[test]
    fn a_guard_that_cannot_be_read_holds_the_step_then_rolls_back_however_good_the_figures() {
        let (result, written, _) = run_with("unreadable", None, &mut |_| Err(REFUSED.to_owned()));
        assert_eq!(
            result.unwrap_err(),
            format!("rolled back to canary_weight 0: step 1/2 at 10 %: no verdict after holding 300ms: {REFUSED}")
        );
        assert!(written.contains(r#""canary_weight": 0,"#), "{written}");
    }

    #[test]
    fn a_guard_refused_for_a_moment_holds_no_longer() {
        let mut reads = 0;
        let (result, written, _) = run_with("refused-once", None, &mut |_| {
            reads += 1;
            if reads <= 3 {
                Err(REFUSED.to_owned())
            } else {
                Ok(None)
            }
        });
        assert!(result.unwrap().starts_with("rollout complete"));
        assert!(written.contains(r#""canary_weight": 50,"#), "{written}");
    }

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
