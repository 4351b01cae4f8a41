//! What the environment may change, and where: the binary reads the API
//! token from `TETHER_API_TOKEN`; the library reads nothing, so a test
//! suite (or any embedder) gets the same `Config::default()` whatever its
//! environment holds. `TETHER_API_TOKEN=s3cret cargo test` once failed
//! every HTTP test with 401s, because the defaults came from clap with the
//! environment as a source.
//!
//! Setting a variable in this process would race with every other test
//! thread reading the environment, so the library is tried in a child
//! process: this test binary again, running one test, with the variable
//! set in its environment from the start.

mod common;

use std::process::Command;

use common::{Gateway, HttpClient, Process, config, json_response};

/// Marks the child run of a test (see [`in_a_child_with_a_token_set`]).
const CHILD: &str = "TETHER_TEST_CHILD";

/// Runs the test `name` of this binary in a child process whose
/// environment has `TETHER_API_TOKEN=s3cret`, and fails if it fails.
/// Returns true in the child, which then does the test's work.
fn in_a_child_with_a_token_set(name: &str) -> bool {
    if std::env::var_os(CHILD).is_some() {
        return true;
    }
    let output = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", name, "--test-threads", "1", "--nocapture"])
        .env(CHILD, "1")
        .env("TETHER_API_TOKEN", "s3cret")
        .output()
        .expect("run the test binary");
    let (stdout, stderr) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "the child run of {name} failed ({}):\n{stdout}\n{stderr}", output.status);
    // It ran, rather than matching nothing.
    assert!(stdout.contains("1 passed"), "the child ran no test:\n{stdout}");
    false
}

#[test]
fn the_library_defaults_ignore_tether_api_token() {
    if !in_a_child_with_a_token_set("the_library_defaults_ignore_tether_api_token") {
        return;
    }
    assert_eq!(std::env::var("TETHER_API_TOKEN").as_deref(), Ok("s3cret"), "the child has the variable");
    assert_eq!(tether::Config::default().api_token, None);
    // A gateway built from the defaults asks no token.
    let gw = Gateway::start(config());
    let mut client = gw.http_client();
    let no_devices = r#"{"total":0,"offset":0,"limit":100,"devices":[]}"#;
    assert_eq!(client.get("/devices").raw(), json_response("200 OK", no_devices, &[], false));
}

/// The binary reads the variable, and `--api-token` wins over it.
#[test]
fn the_binary_takes_the_token_from_the_flag_before_the_environment() {
    let tether = Process::start_with_env(&["--api-token", "from-flag"], &[("TETHER_API_TOKEN", "from-env")], None);
    let mut http = HttpClient::connect(tether.http);
    for (token, status) in [("from-env", 401), ("from-flag", 200)] {
        http.send(format!("GET /devices HTTP/1.1\r\nAuthorization: Bearer {token}\r\n\r\n").as_bytes());
        let response = http.read_response();
        assert_eq!(response.status, status, "{token}: {}", response.raw());
    }
}
