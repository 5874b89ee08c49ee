//! Command-line flags of the form `--name VALUE`, `--name=VALUE` and `--switch`.

use std::time::Duration;

pub struct Flags {
    values: Vec<(String, String)>,
    switches: Vec<String>,
}

impl Flags {
    /// Reads `args` given the flags that take a value and the switches that do not; anything else
    /// is an error.
    pub fn parse(args: &[String], valued: &[&str], switches: &[&str]) -> Result<Flags, String> {
        let mut flags = Flags {
            values: Vec::new(),
            switches: Vec::new(),
        };
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            let (name, inline) = match arg.split_once('=') {
                Some((name, value)) if name.starts_with("--") => (name, Some(value.to_owned())),
                _ => (arg.as_str(), None),
            };
            if valued.contains(&name) {
                let value = match inline {
                    Some(value) => value,
                    None => args.next().cloned().ok_or_else(|| format!("{name} needs a value"))?,
                };
                if flags.get(name).is_some() {
                    return Err(format!("{name} is given twice"));
                }
                flags.values.push((name.to_owned(), value));
            } else if switches.contains(&name) && inline.is_none() {
                flags.switches.push(name.to_owned());
            } else {
                return Err(format!("unknown argument {arg:?}"));
            }
        }
        Ok(flags)
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    pub fn required(&self, name: &str) -> Result<&str, String> {
        self.get(name).ok_or_else(|| format!("{name} is required"))
    }

    pub fn has(&self, switch: &str) -> bool {
        self.switches.iter().any(|s| s == switch)
    }

    pub fn duration(&self, name: &str) -> Result<Option<Duration>, String> {
        self.get(name)
            .map(|text| humantime::parse_duration(text).map_err(|e| format!("{name} {text:?}: {e}")))
            .transpose()
    }

    pub fn number(&self, name: &str) -> Result<Option<f64>, String> {
        self.get(name)
            .map(|text| match text.parse::<f64>() {
                Ok(number) if number.is_finite() && number >= 0.0 => Ok(number),
                _ => Err(format!("{name} {text:?}: expected a number, 0 or more")),
            })
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Flags, String> {
        let args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
        Flags::parse(&args, &["--steps", "--interval", "--min-requests"], &["--run"])
    }

    #[test]
    fn values_switches_and_durations() {
        let flags = parse(&["--steps", "10,50", "--interval=5m", "--run", "--min-requests", "20"]).unwrap();
        assert_eq!(flags.get("--steps"), Some("10,50"));
        assert_eq!(flags.duration("--interval").unwrap(), Some(Duration::from_secs(300)));
        assert_eq!(flags.number("--min-requests").unwrap(), Some(20.0));
        assert!(flags.has("--run"));
        assert_eq!(flags.required("--bogus").unwrap_err(), "--bogus is required");
    }

    #[test]
    fn mistakes_are_named() {
        assert_eq!(parse(&["--steps"]).err().unwrap(), "--steps needs a value");
        assert_eq!(parse(&["--stpes", "1"]).err().unwrap(), "unknown argument \"--stpes\"");
        assert_eq!(parse(&["--run=yes"]).err().unwrap(), "unknown argument \"--run=yes\"");
        assert_eq!(
            parse(&["--steps", "1", "--steps", "2"]).err().unwrap(),
            "--steps is given twice"
        );
        let flags = parse(&["--interval", "5 parsecs", "--min-requests", "-1"]).unwrap();
        assert!(flags
            .duration("--interval")
            .unwrap_err()
            .starts_with("--interval \"5 parsecs\": "));
        assert!(flags.number("--min-requests").is_err());
    }
}
