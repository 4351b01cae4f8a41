//! The HTML report (`--html FILE`): one self-contained file a browser
//! opens from disk. Its data (the summary, the timeline, the settings) is
//! JSON in a `<script type="application/json">` element; its script and
//! style are inline (`html/report.js`, `html/report.css`, built into the
//! binary), and draw the charts as SVG. Nothing is fetched from anywhere.
//!
//! Charts: collars connected over time, the connect rate, the round-trip
//! percentiles over time, the latency distributions (HDR percentile plots,
//! log scale), heartbeats and lines per second, and failures and closes by
//! reason; tables of the main figures and of the run's settings.

use std::time::Duration;

use serde::Serialize;

use crate::cli::Args;
use crate::summary::Summary;
use crate::timeline::{Point, Timeline};

const SCRIPT: &str = include_str!("html/report.js");
const STYLE: &str = include_str!("html/report.css");

/// What the page's script reads.
#[derive(Serialize)]
struct Data<'a> {
    command: &'a str,
    settings: Vec<(&'static str, String)>,
    interval_s: f64,
    dropped: u64,
    points: &'a [Point],
    summary: &'a Summary,
}

/// The run's settings as the report lists them.
fn settings(args: &Args) -> Vec<(&'static str, String)> {
    let duration = |d: Duration| if d.is_zero() { "off".to_owned() } else { format!("{d:?}") };
    vec![
        ("target", args.target.to_string()),
        ("collars", args.collars.to_string()),
        ("processes", args.processes.to_string()),
        ("duration", duration(args.duration)),
        (
            "connect rate",
            if args.connect_rate > 0.0 { format!("{}/s", args.connect_rate) } else { "as fast as allowed".into() },
        ),
        ("most in flight", args.max_in_flight.to_string()),
        ("connect timeout", duration(args.connect_timeout)),
        ("ping interval", duration(args.ping_interval)),
        ("report interval", duration(args.report_interval)),
        ("RTT loop", if args.rtt { format!("{} collars", args.active) } else { "off".into() }),
        ("first MAC", args.mac_base.to_string()),
        ("source addresses", args.source_ips.as_ref().map_or("any".into(), ToString::to_string)),
    ]
}

/// The report's HTML: `command` is the command line that ran.
pub fn render(args: &Args, command: &str, summary: &Summary, timeline: &Timeline) -> String {
    let data = Data {
        command,
        settings: settings(args),
        interval_s: timeline.interval_us as f64 / 1e6,
        dropped: timeline.dropped,
        points: &timeline.points,
        summary,
    };
    // Within a <script> element only "</script" (any case) could end the
    // JSON early; "<" appears in JSON only inside strings, where \u003c
    // means the same.
    let json = serde_json::to_string(&data).unwrap_or_default().replace('<', "\\u003c");
    let title = format!("tether-load: {} collars against {}", summary.collars, summary.target);
    format!(
        r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>
{STYLE}</style>
</head>
<body>
<main>
<h1>{title}</h1>
<p class="sub">{elapsed:.1} s, {processes} process(es). Hover a chart, or focus it and use the arrow keys, for the values.</p>
<noscript><p>The charts are drawn by the page's own script; the figures are in the JSON at the end of this file.</p></noscript>
<section class="charts">
<figure id="connected"><h2>Collars connected</h2><figcaption>Online and connecting collars, and the running totals of failed ones and those closed by the gateway.</figcaption></figure>
<figure id="rate"><h2>Connect rate</h2><figcaption>Connections established, attempted and failed per second, per sample interval.</figcaption></figure>
<figure id="rtt-time"><h2>Round trips over time</h2><figcaption>PING to PONG percentiles of each sample interval, over all processes (log scale).</figcaption></figure>
<figure id="rtt-dist"><h2>Latency distribution</h2><figcaption>HDR percentile plot over the whole run: the tail to the right (log scales).</figcaption></figure>
<figure id="traffic"><h2>Heartbeats and lines</h2><figcaption>The gateway's heartbeat PINGs, and protocol lines received and sent, per second.</figcaption></figure>
<figure id="ends"><h2>Failures and closes by reason</h2><figcaption>How collars ended before the run did: failures by kind, closes by the gateway by BYE reason.</figcaption></figure>
</section>
<section class="tables">
<div><h2>Figures</h2><table id="figures-table"><tbody></tbody></table></div>
<div><h2>Settings</h2><table id="settings-table"><tbody></tbody></table></div>
</section>
</main>
<script type="application/json" id="data">{json}</script>
<script>
{SCRIPT}</script>
</body>
</html>
"#,
        title = escape(&title),
        elapsed = summary.elapsed_s,
        processes = summary.processes,
    )
}

/// Text for HTML element content.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::Stats;
    use crate::summary::Timing;
    use clap::Parser;

    #[test]
    fn the_page_is_self_contained_and_its_data_cannot_end_the_script() {
        let args = Args::try_parse_from(["tether-load", "-n", "3"]).unwrap();
        let summary = Summary::new("127.0.0.1:3001", 3, &Stats::default(), Timing::default());
        let timeline = Timeline::new(1_000_000, 1, 10).finish();
        let html = render(&args, "tether-load </script><b>", &summary, &timeline);
        assert!(html.starts_with("<!doctype html>\n<html lang=\"en\">"));
        assert!(html.contains("<title>tether-load: 3 collars against 127.0.0.1:3001</title>"));
        // The command line is data, escaped, never markup.
        assert!(html.contains(r#""command":"tether-load \u003c/script>\u003cb>""#), "{html}");
        assert_eq!(html.matches("</script>").count(), 2, "the data's and the script's own");
        // Nothing is loaded from anywhere.
        for fetch in ["src=", "href=", "https://", "@import", "url("] {
            assert!(!html.contains(fetch), "{fetch}");
        }
        // The one address is SVG's namespace, a name rather than a link.
        assert_eq!(html.matches("http://").count(), html.matches("http://www.w3.org/2000/svg").count());
        assert!(html.contains(r#"["collars","3"]"#) && html.contains(r#"["ping interval","off"]"#), "{html}");
    }
}
