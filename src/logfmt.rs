//! How the binary's log lines look: `text` (env_logger's own,
//! `[2026-11-29T06:43:10Z INFO  tether::gateway] message`) for a person,
//! or `json` for a log shipper: one object a line with the same fields,
//! `{"time":"2026-11-29T06:43:10.123Z","level":"INFO","target":"tether::gateway","message":"…"}`
//! (the time to the millisecond, RFC 3339 UTC).
//!
//! The JSON line is built by [`json_line`], a pure function, through
//! serde_json, so any message (quotes, newlines, control bytes from a
//! peer's escaped input) stays one valid object on one line.

use std::fmt;
use std::io::Write;

use serde::Serialize;

/// `--log-format`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// `[time LEVEL target] message`, for a person.
    #[default]
    Text,
    /// One JSON object a line: time, level, target, message.
    Json,
}

/// One log record as the JSON format writes it (fields in this order).
#[derive(Serialize)]
struct Line<'a> {
    time: &'a str,
    level: &'a str,
    target: &'a str,
    message: String,
}

/// The JSON object for one record, without the newline.
pub fn json_line(time: &str, level: log::Level, target: &str, message: &fmt::Arguments<'_>) -> String {
    let line = Line { time, level: level.as_str(), target, message: message.to_string() };
    // A struct of strings always serializes.
    serde_json::to_string(&line).unwrap_or_default()
}

/// Installs the logger: `RUST_LOG` picks the level (default `info`),
/// `format` the shape of each line (on stderr). A worker's and the
/// supervisor's lines say who wrote them (`prefix`: `worker 2: `,
/// `supervisor: `) at the start of the message, as their lines share one
/// stderr.
pub fn init(format: LogFormat, prefix: Option<String>) {
    let mut builder = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"));
    let prefix = prefix.unwrap_or_default();
    match format {
        LogFormat::Json => {
            builder.format(move |buf, record| {
                let time = buf.timestamp_millis().to_string();
                let message = format_args!("{prefix}{}", record.args());
                writeln!(buf, "{}", json_line(&time, record.level(), record.target(), &message))
            });
        }
        LogFormat::Text if !prefix.is_empty() => {
            builder.format(move |buf, record| {
                let (level, target, args) = (record.level(), record.target(), record.args());
                writeln!(buf, "[{} {level:<5} {target}] {prefix}{args}", buf.timestamp())
            });
        }
        // env_logger's own format, which the prefixed one copies.
        LogFormat::Text => {}
    }
    builder.init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_is_one_object_on_one_line_with_the_text_logs_fields() {
        let line = json_line(
            "2026-11-29T06:43:10.123Z",
            log::Level::Info,
            "tether::gateway",
            &format_args!("devices: listening on {}", "127.0.0.1:3001"),
        );
        assert_eq!(
            line,
            r#"{"time":"2026-11-29T06:43:10.123Z","level":"INFO","target":"tether::gateway","message":"devices: listening on 127.0.0.1:3001"}"#
        );
    }

    #[test]
    fn quotes_newlines_and_control_bytes_stay_inside_the_string() {
        let line = json_line("t", log::Level::Trace, "tether::reactor", &format_args!("#3 <- \"a\"\n\u{1}b\\"));
        assert_eq!(
            line,
            r##"{"time":"t","level":"TRACE","target":"tether::reactor","message":"#3 <- \"a\"\n\u0001b\\"}"##
        );
        assert!(!line.contains('\n'));
        let back: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(back["message"], "#3 <- \"a\"\n\u{1}b\\");
    }
}
