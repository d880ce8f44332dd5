//! The wall clock as piv writes it into its files: the one place that reads "now" as text.

/// Now as the manifest and the state files write it: RFC 3339 with milliseconds, `Z`.
pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}
