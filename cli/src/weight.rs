//! A canary weight as the config writes it: a percent from 0 to 100 in steps of 0.01, held in
//! basis points so that steps compare and print exactly.

use std::fmt;

/// A `canary_weight`, in basis points (`1250` is 12.5 %).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Weight(u16);

impl Weight {
    pub const ZERO: Weight = Weight(0);
    pub const FULL: Weight = Weight(10_000);

    pub fn from_basis_points(basis_points: u16) -> Option<Weight> {
        (basis_points <= 10_000).then_some(Weight(basis_points))
    }

    /// Parses a percent as the config would hold it: `10`, `12.5`, `0.01`.
    pub fn parse(text: &str) -> Result<Weight, String> {
        let percent: f64 = text.trim().parse().map_err(|_| format!("{text:?} is not a number"))?;
        if !(0.0..=100.0).contains(&percent) {
            return Err(format!("{text} is not in 0..=100"));
        }
        let basis_points = (percent * 100.0).round();
        if (percent * 100.0 - basis_points).abs() > 1e-6 {
            return Err(format!("{text} is finer than 0.01"));
        }
        // In 0..=10_000 after the range check above.
        Ok(Weight(basis_points.clamp(0.0, 10_000.0) as u16))
    }

    pub fn basis_points(self) -> u16 {
        self.0
    }
}

/// The shortest exact form: `10`, `12.5`, `0.05`. Written into configs as a YAML or JSON number.
impl fmt::Display for Weight {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (whole, hundredths) = (self.0 / 100, self.0 % 100);
        match hundredths {
            0 => write!(f, "{whole}"),
            h if h % 10 == 0 => write!(f, "{whole}.{}", h / 10),
            h => write!(f, "{whole}.{h:02}"),
        }
    }
}

/// The rollout plan's steps: `10,25,50,100`, each above the one before.
pub fn parse_steps(text: &str) -> Result<Vec<Weight>, String> {
    let mut steps: Vec<Weight> = Vec::new();
    for part in text.split(',') {
        let step = Weight::parse(part).map_err(|e| format!("--steps: {e}"))?;
        if step == Weight::ZERO {
            return Err("--steps: a step of 0 sends the canary nothing to judge".to_owned());
        }
        if steps.last().is_some_and(|&last| step <= last) {
            return Err(format!("--steps: {step} does not go above the step before it"));
        }
        steps.push(step);
    }
    Ok(steps)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_exactly() {
        for (text, basis_points, printed) in [
            ("10", 1000, "10"),
            ("12.5", 1250, "12.5"),
            ("12.50", 1250, "12.5"),
            ("0.05", 5, "0.05"),
            ("33.33", 3333, "33.33"),
            ("100", 10_000, "100"),
            ("0", 0, "0"),
        ] {
            let weight = Weight::parse(text).unwrap();
            assert_eq!(weight.basis_points(), basis_points, "{text}");
            assert_eq!(weight.to_string(), printed, "{text}");
        }
    }

    #[test]
    fn refuses_what_the_filter_refuses() {
        assert_eq!(Weight::parse("150").unwrap_err(), "150 is not in 0..=100");
        assert_eq!(Weight::parse("-1").unwrap_err(), "-1 is not in 0..=100");
        assert_eq!(Weight::parse("12.345").unwrap_err(), "12.345 is finer than 0.01");
        assert_eq!(Weight::parse("ten").unwrap_err(), "\"ten\" is not a number");
    }

    #[test]
    fn steps_must_rise() {
        let steps = parse_steps("10,25,50,100").unwrap();
        assert_eq!(
            steps.iter().map(|s| s.basis_points()).collect::<Vec<_>>(),
            [1000, 2500, 5000, 10_000]
        );
        assert_eq!(
            parse_steps("10,10").unwrap_err(),
            "--steps: 10 does not go above the step before it"
        );
        assert_eq!(
            parse_steps("25,10").unwrap_err(),
            "--steps: 10 does not go above the step before it"
        );
        assert!(parse_steps("0,10").unwrap_err().contains("nothing to judge"));
        assert!(parse_steps("10,").is_err());
    }
}
