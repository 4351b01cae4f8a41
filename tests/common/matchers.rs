//! Matchers for what the gateway writes: JSON with timestamps and peer
//! addresses in it ([`assert_like`] with placeholders), one sample of
//! Prometheus text ([`metric`]), and a coordinate as the JSON writes it
//! ([`num`]).

/// A coordinate as the gateway's JSON writes it: `3` is `3.0`.
pub fn num(text: &str) -> String {
    serde_json::to_string(&text.parse::<f64>().expect("a number")).unwrap()
}

/// The value of one Prometheus sample, `series` written as in the text
/// (`name` or `name{label="value",...}`).
pub fn metric(text: &str, series: &str) -> f64 {
    let line = text
        .lines()
        .find(|l| l.strip_prefix(series).is_some_and(|rest| rest.starts_with(' ')))
        .unwrap_or_else(|| panic!("no sample {series:?} in\n{text}"));
    let value = &line[series.len() + 1..];
    value.parse().unwrap_or_else(|_| panic!("not a number: {line:?}"))
}

/// Asserts `got` is `template`, where the template may hold placeholders:
/// `<TIME>` (an RFC 3339 UTC time in milliseconds, within two minutes of
/// now), `<PEER>` (`127.0.0.1:<port>`), `<INT>` (digits).
pub fn assert_like(got: &str, template: &str) {
    if let Err(why) = like(got, template) {
        panic!("{why}\n     got: {got}\ntemplate: {template}");
    }
}

fn like(got: &str, template: &str) -> Result<(), String> {
    const TOKENS: [&str; 3] = ["<TIME>", "<PEER>", "<INT>"];
    let (mut g, mut t) = (got, template);
    loop {
        let next = TOKENS.iter().filter_map(|tok| t.find(tok).map(|i| (i, *tok))).min();
        let Some((i, token)) = next else {
            return if g == t { Ok(()) } else { Err(format!("expected {t:?}, got {g:?}")) };
        };
        let literal = &t[..i];
        let Some(rest) = g.strip_prefix(literal) else {
            return Err(format!("expected {literal:?}, got {g:?}"));
        };
        g = rest;
        t = &t[i + token.len()..];
        let digits = |s: &str| s.bytes().take_while(u8::is_ascii_digit).count();
        let used = match token {
            "<INT>" => digits(g),
            "<PEER>" => match g.strip_prefix("127.0.0.1:") {
                Some(port) if digits(port) > 0 => "127.0.0.1:".len() + digits(port),
                _ => 0,
            },
            _ => check_time(g)?,
        };
        if used == 0 {
            return Err(format!("expected {token}, got {g:?}"));
        }
        g = &g[used..];
    }
}

/// Checks `text` starts with `YYYY-MM-DDTHH:MM:SS.mmmZ` close to now.
fn check_time(text: &str) -> Result<usize, String> {
    let bad = || format!("expected a time like 2025-01-31T12:34:56.789Z, got {text:?}");
    let t = text.get(..24).ok_or_else(bad)?.as_bytes();
    let shape = b"dddd-dd-ddTdd:dd:dd.dddZ";
    if !t.iter().zip(shape).all(|(&c, &s)| if s == b'd' { c.is_ascii_digit() } else { c == s }) {
        return Err(bad());
    }
    let n = |from: usize, to: usize| std::str::from_utf8(&t[from..to]).unwrap().parse::<i64>().unwrap();
    let (y, m, d) = (n(0, 4), n(5, 7), n(8, 10));
    // Days from 1970-01-01 to y-m-d (Howard Hinnant's days_from_civil).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + n(11, 13) * 3600 + n(14, 16) * 60 + n(17, 19);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    if (now - secs).abs() > 120 {
        return Err(format!("{} is not close to now", String::from_utf8_lossy(t)));
    }
    Ok(24)
}
