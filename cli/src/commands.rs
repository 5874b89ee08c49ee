//! The commands that are not about a rollout: `status.rs` and `rollout.rs` sit beside this.

pub mod check;
pub mod explain;
pub mod token;

/// `--now`, or the clock.
pub fn unix_time(now: Option<u64>) -> Result<u64, String> {
    match now {
        Some(now) => Ok(now),
        None => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|since| since.as_secs())
            .map_err(|e| format!("the clock is before 1970: {e}")),
    }
}
