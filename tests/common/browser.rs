//! A real browser for the dashboard's tests: headless Chromium driven
//! through chromedriver (WebDriver) with `fantoccini`.
//!
//! [`Browser::open`] starts a chromedriver of its own on a free loopback
//! port (waiting for the line it prints when it listens, not for a guess
//! of how long that takes) and a Chromium session on it; dropping the
//! [`Browser`] ends the session and that chromedriver (by its own child
//! handle). fantoccini is async; a `Browser` owns a single-threaded tokio
//! runtime and blocks on each call, so the tests read like the others.
//!
//! Waiting is done in the page: [`Browser::wait_for`] runs a script that
//! checks a condition at once and again on every change of the DOM (a
//! `MutationObserver`), and answers when it holds or when the time is up.
//! No polling from the test, no sleeps.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Condvar, Mutex};
use std::thread;
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Value, json};

use super::TIMEOUT;
use super::require::{program, require};

/// Where Debian puts them (the `chromium` and `chromium-driver` packages).
const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "chromedriver";

/// At most this many browsers at once in one test binary: each Chromium
/// takes a few hundred MB and a core while it starts.
const MAX_BROWSERS: usize = 2;

static RUNNING: Mutex<usize> = Mutex::new(0);
static FREED: Condvar = Condvar::new();

/// One of the [`MAX_BROWSERS`] places, given back when dropped (also when
/// starting the browser failed).
struct Slot;

impl Slot {
    fn take() -> Slot {
        let mut running = RUNNING.lock().unwrap_or_else(|e| e.into_inner());
        while *running >= MAX_BROWSERS {
            running = FREED.wait(running).unwrap_or_else(|e| e.into_inner());
        }
        *running += 1;
        Slot
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        *RUNNING.lock().unwrap_or_else(|e| e.into_inner()) -= 1;
        FREED.notify_one();
    }
}

/// Whether a browser can be started here: `Ok`, or why not.
pub fn available() -> Result<(), String> {
    program(CHROMEDRIVER)?;
    if !Path::new(CHROMIUM).is_file() {
        return Err(format!("{CHROMIUM} is missing (scripts/test.sh installs the chromium package)"));
    }
    Ok(())
}

/// A headless Chromium session and the chromedriver that runs it.
pub struct Browser {
    runtime: tokio::runtime::Runtime,
    client: Option<Client>,
    _driver: Driver,
    /// Declared last: given back after the browser and its driver are gone.
    _slot: Slot,
}

impl Browser {
    /// A browser with a window of `width` x `height` CSS pixels, or `None`
    /// (the test skipped) when there is none to be had and the test was
    /// run by hand; under `scripts/test.sh` a missing browser fails.
    pub fn open(test: &str, width: u32, height: u32) -> Option<Browser> {
        if !require(test, available()) {
            return None;
        }
        let slot = Slot::take();
        let (driver, port) = start_driver();
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let capabilities = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--no-first-run",
                    "--disable-extensions",
                    "--hide-scrollbars",
                    "--force-device-scale-factor=1",
                    format!("--window-size={width},{height}"),
                ],
            },
        });
        let Value::Object(capabilities) = capabilities else { unreachable!() };
        let client = runtime
            .block_on(async {
                ClientBuilder::new(HttpConnector::new())
                    .capabilities(capabilities)
                    .connect(&format!("http://127.0.0.1:{port}"))
                    .await
            })
            .unwrap_or_else(|e| panic!("{test}: no Chromium session: {e}"));
        let mut browser = Browser { runtime, client: Some(client), _driver: driver, _slot: slot };
        browser.set_size(width, height);
        Some(browser)
    }

    fn client(&self) -> &Client {
        self.client.as_ref().expect("open")
    }

    /// Resizes the viewport (the window's inner size) to `width` x `height`.
    pub fn set_size(&mut self, width: u32, height: u32) {
        // The outer window is larger than the viewport by the browser's own
        // frame; measure it and make up the difference.
        self.runtime.block_on(self.client().set_window_size(width, height)).unwrap();
        let inner = self.eval("return [window.innerWidth, window.innerHeight];");
        let (w, h) = (inner[0].as_u64().unwrap() as u32, inner[1].as_u64().unwrap() as u32);
        if (w, h) != (width, height) {
            let (outer_w, outer_h) = (width + (width - w.min(width)), height + (height - h.min(height)));
            self.runtime.block_on(self.client().set_window_size(outer_w, outer_h)).unwrap();
        }
    }

    /// Loads `url` (waits for the document to be loaded).
    pub fn goto(&self, url: &str) {
        self.runtime.block_on(self.client().goto(url)).unwrap_or_else(|e| panic!("goto {url}: {e}"));
    }

    /// Runs `script` (a function body; `arguments` are `args`) and returns
    /// what it returns.
    pub fn eval_with(&self, script: &str, args: Vec<Value>) -> Value {
        self.runtime.block_on(self.client().execute(script, args)).unwrap_or_else(|e| panic!("{script}: {e}"))
    }

    pub fn eval(&self, script: &str) -> Value {
        self.eval_with(script, Vec::new())
    }

    /// Waits until the JavaScript expression `condition` is truthy, for at
    /// most `within`; returns its value. Checked at once and after every
    /// change of the document.
    pub fn wait_for_within(&self, condition: &str, within: Duration) -> Value {
        let script = format!(
            r#"
            const done = arguments[arguments.length - 1];
            const check = () => {{ try {{ return ({condition}); }} catch (e) {{ return false; }} }};
            let value = check();
            if (value) {{ done({{ ok: true, value }}); return; }}
            const observer = new MutationObserver(() => {{
                value = check();
                if (value) {{ observer.disconnect(); clearTimeout(timer); done({{ ok: true, value }}); }}
            }});
            observer.observe(document, {{ subtree: true, childList: true, characterData: true, attributes: true }});
            const timer = setTimeout(() => {{ observer.disconnect(); done({{ ok: false, value: check() }}); }}, {ms});
            "#,
            ms = within.as_millis()
        );
        let answer = self
            .runtime
            .block_on(self.client().execute_async(&script, Vec::new()))
            .unwrap_or_else(|e| panic!("waiting for {condition}: {e}"));
        if answer["ok"] != Value::Bool(true) {
            let status = self.text("#status");
            panic!("not within {within:?}: {condition} (status: {status:?})");
        }
        answer["value"].clone()
    }

    /// [`Browser::wait_for_within`] the tests' [`TIMEOUT`].
    pub fn wait_for(&self, condition: &str) -> Value {
        self.wait_for_within(condition, TIMEOUT)
    }

    /// The text content of the first element matching `selector` (`None`
    /// if there is none).
    pub fn text(&self, selector: &str) -> Option<String> {
        let value = self.eval_with(
            "const e = document.querySelector(arguments[0]); return e && e.textContent;",
            vec![json!(selector)],
        );
        value.as_str().map(str::to_string)
    }

    /// Whether the first element matching `selector` is rendered (not
    /// `hidden`, nor inside a hidden element).
    pub fn visible(&self, selector: &str) -> bool {
        let script = "const e = document.querySelector(arguments[0]); return !!e && e.getClientRects().length > 0;";
        self.eval_with(script, vec![json!(selector)]) == Value::Bool(true)
    }

    pub fn click(&self, selector: &str) {
        self.runtime
            .block_on(async { self.client().find(Locator::Css(selector)).await?.click().await })
            .unwrap_or_else(|e| panic!("click {selector}: {e}"));
    }

    /// Types `text` into the field matching `selector` (as keystrokes).
    pub fn type_into(&self, selector: &str, text: &str) {
        self.runtime
            .block_on(async {
                let field = self.client().find(Locator::Css(selector)).await?;
                field.clear().await?;
                field.send_keys(text).await
            })
            .unwrap_or_else(|e| panic!("type into {selector}: {e}"));
    }

    /// Sends keystrokes to whatever has the focus.
    pub fn keys(&self, keys: &str) {
        self.runtime
            .block_on(async { self.client().active_element().await?.send_keys(keys).await })
            .unwrap_or_else(|e| panic!("keys: {e}"));
    }

    /// Saves a screenshot of the viewport as `target/<name>.png`; its path.
    pub fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.runtime.block_on(self.client().screenshot()).unwrap();
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap();
        path
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            let _ = self.runtime.block_on(client.close());
        }
    }
}

/// The chromedriver child process, ended when dropped (also when starting
/// a session on it failed).
struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts chromedriver on a free loopback port; returns it once it says it
/// listens. The port is free on IPv4 when picked; chromedriver also binds
/// it on IPv6, where another process may hold it (a busy host), and then
/// exits saying so: another port is tried, a few times.
fn start_driver() -> (Driver, u16) {
    for _ in 0..5 {
        // A port the kernel just handed out and took back: free unless another
        // process takes it in between, which chromedriver would report.
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let mut driver = Driver(driver);
        let stdout = driver.0.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if line.contains("started successfully") {
                    let _ = tx.send(Ok(()));
                } else if line.contains("bind() failed")
                    || line.contains("Address already in use")
                    || line.contains("port not available")
                {
                    let _ = tx.send(Err(line));
                }
            }
        });
        match rx.recv_timeout(TIMEOUT) {
            Ok(Ok(())) => return (driver, port),
            Ok(Err(line)) => eprintln!("chromedriver on port {port}: {line}; trying another port"),
            Err(RecvTimeoutError::Disconnected) => panic!("chromedriver on port {port} exited without listening"),
            Err(RecvTimeoutError::Timeout) => panic!("chromedriver did not say it listens within {TIMEOUT:?}"),
        }
    }
    panic!("chromedriver found no free port in 5 tries");
}
