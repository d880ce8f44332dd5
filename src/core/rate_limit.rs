//! The CLI's `rate_limit_event` as piv reads it (pure): the subscription window's status,
//! its reset, how full it is, and whether the session is being paid from extra usage.
//!
//! Shapes (newest CLI, `rate_limit_info`): `status` (`allowed`, `allowed_warning`,
//! `rejected`), `resetsAt` (unix seconds), `rateLimitType` (`five_hour`, `seven_day`,
//! `seven_day_opus`, `seven_day_sonnet`, `overage`), `utilization` (0..1), and the overage
//! fields `overageStatus`, `overageResetsAt`, `overageDisabledReason`, `isUsingOverage`
//! (and the later `overageInUse`). Samples: `tests/fixtures/rate-limit/`.

use serde_json::{Map, Value};

/// One `rate_limit_info`, reduced to what the coordinator uses.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RateLimitInfo {
    /// `allowed`, `allowed_warning` or `rejected` (empty when absent).
    pub status: String,
    /// Unix seconds.
    pub resets_at: Option<i64>,
    /// `rateLimitType`: which window (`five_hour`, `seven_day`, ...).
    pub window: Option<String>,
    /// How full the window is, 0..1 (a percentage is scaled down).
    pub utilization: Option<f64>,
    /// `overageStatus`: whether extra usage is allowed, warned about or rejected.
    pub overage_status: Option<String>,
    pub overage_resets_at: Option<i64>,
    /// `isUsingOverage` / `overageInUse`: this request is paid from extra usage.
    pub using_overage: bool,
}

impl RateLimitInfo {
    /// Reads the fields of `rate_limit_info`; a field of the wrong type is an error
    /// naming it (the caller turns it into a stream-line error).
    pub fn from_json(info: &Map<String, Value>) -> Result<RateLimitInfo, &'static str> {
        let text = |field: &'static str| match info.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(field),
        };
        let time = |field: &'static str| match info.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(s.trim().parse::<f64>().ok().map(epoch_secs)),
            Some(v) => v.as_f64().map(|n| Some(epoch_secs(n))).ok_or(field),
        };
        let flag = |field: &'static str| match info.get(field) {
            None | Some(Value::Null) => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(_) => Err(field),
        };
        let utilization = match info.get("utilization") {
            None | Some(Value::Null) => None,
            Some(v) => {
                let u = v.as_f64().ok_or("utilization")?;
                Some(if u > 1.0 { u / 100.0 } else { u })
            }
        };
        Ok(RateLimitInfo {
            status: text("status")?.unwrap_or_default(),
            resets_at: time("resetsAt")?,
            window: text("rateLimitType")?,
            utilization,
            overage_status: text("overageStatus")?,
            overage_resets_at: time("overageResetsAt")?,
            using_overage: flag("isUsingOverage")? || flag("overageInUse")?,
        })
    }

    /// The session is being paid from extra usage: the CLI says so, or the window is
    /// rejected while extra usage is allowed (the CLI goes on, on overage).
    pub fn is_overage(&self) -> bool {
        self.using_overage
            || (self.status == "rejected"
                && matches!(
                    self.overage_status.as_deref(),
                    Some("allowed" | "allowed_warning")
                ))
    }

    /// The window refused the request and nothing pays for it: a usage limit.
    pub fn is_rejected(&self) -> bool {
        self.status == "rejected" && !self.is_overage()
    }

    /// The window is nearly full: the utilization, when reported, at or above `park_at`;
    /// otherwise the CLI's `allowed_warning`.
    pub fn near_limit(&self, park_at: f64) -> bool {
        match self.utilization {
            Some(u) => u >= park_at,
            None => self.status == "allowed_warning",
        }
    }

    /// The window's name for a human (`five_hour` → "5-hour").
    pub fn window_name(&self) -> String {
        window_name(self.window.as_deref())
    }
}

/// A window's name for a human.
pub fn window_name(window: Option<&str>) -> String {
    match window {
        Some("five_hour") => "5-hour".to_string(),
        Some("seven_day") => "weekly".to_string(),
        Some("seven_day_opus") => "weekly Opus".to_string(),
        Some("seven_day_sonnet") => "weekly Sonnet".to_string(),
        Some("overage") => "extra usage".to_string(),
        Some(other) => other.replace('_', " "),
        None => "usage".to_string(),
    }
}

/// `resetsAt` is documented as unix seconds; accept milliseconds too rather than waiting
/// 1000x too long.
pub fn epoch_secs(n: f64) -> i64 {
    if n > 100_000_000_000.0 {
        (n / 1000.0) as i64
    } else {
        n as i64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(json: &str) -> RateLimitInfo {
        let v: Value = serde_json::from_str(json).unwrap();
        RateLimitInfo::from_json(v["rate_limit_info"].as_object().unwrap()).unwrap()
    }

    #[test]
    fn the_newest_shapes_are_read() {
        let cases = [
            // (line, rejected, overage, near at 0.9)
            (
                include_str!("../../tests/fixtures/rate-limit/rejected.json"),
                true,
                false,
                true,
            ),
            (
                include_str!("../../tests/fixtures/rate-limit/allowed.json"),
                false,
                false,
                false,
            ),
            (
                include_str!("../../tests/fixtures/rate-limit/warning.json"),
                false,
                false,
                true,
            ),
            (
                include_str!("../../tests/fixtures/rate-limit/overage.json"),
                false,
                true,
                false,
            ),
            (
                r#"{"type":"rate_limit_event","rate_limit_info":{"status":"rejected","overageStatus":"allowed"}}"#,
                false,
                true,
                false,
            ),
            (
                r#"{"type":"rate_limit_event","rate_limit_info":{"status":"allowed_warning"}}"#,
                false,
                false,
                true,
            ),
            (
                r#"{"type":"rate_limit_event","rate_limit_info":{"status":"allowed_warning","utilization":0.5}}"#,
                false,
                false,
                false,
            ),
            (
                r#"{"type":"rate_limit_event","rate_limit_info":{"status":"allowed","utilization":95}}"#,
                false,
                false,
                true,
            ),
        ];
        for (line, rejected, overage, near) in cases {
            let i = info(line.trim());
            assert_eq!(i.is_rejected(), rejected, "{line}");
            assert_eq!(i.is_overage(), overage, "{line}");
            assert_eq!(i.near_limit(0.9), near, "{line}");
        }
        let r = info(include_str!("../../tests/fixtures/rate-limit/rejected.json").trim());
        assert_eq!(r.window_name(), "5-hour");
        assert!(r.resets_at.is_some());
        let bad: Value = serde_json::from_str(r#"{"isUsingOverage":"yes"}"#).unwrap();
        assert_eq!(
            RateLimitInfo::from_json(bad.as_object().unwrap()),
            Err("isUsingOverage")
        );
    }
}
