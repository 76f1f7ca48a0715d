//! The status page in a real headless browser: Debian's `chromium`, driven over the W3C
//! WebDriver protocol by Debian's `chromedriver` (both installed by `scripts/test`), against
//! `burnwatch serve` evaluating a real Prometheus that scrapes a live target.

use std::io::Read as _;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};

use crate::serve::{PATIENCE, POLL, SLO_ID, live};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// A route label that would run script if the page did not escape it.
const HOSTILE_ROUTE: &str = "<script>document.title='pwned'</script><img src=x onerror=alert(1)>";

/// One chromedriver and one headless Chromium session; both end on drop.
pub(crate) struct Browser {
    driver: Child,
    base: String,
    session: String,
    http: reqwest::blocking::Client,
    _profile: tempfile::TempDir,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free port")
}

impl Browser {
    pub(crate) fn start() -> Browser {
        for program in [CHROMIUM, CHROMEDRIVER] {
            assert!(
                std::path::Path::new(program).exists(),
                "{program} is missing: apt-get install -y chromium chromium-driver (scripts/test does)"
            );
        }
        burnwatch::source::prometheus::install_crypto_provider();
        let port = free_port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start chromedriver");
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::blocking::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(60))
            .build()
            .expect("client");
        let deadline = Instant::now() + PATIENCE;
        while !http
            .get(format!("{base}/status"))
            .send()
            .ok()
            .and_then(|answer| answer.json::<Value>().ok())
            .is_some_and(|status| status["value"]["ready"] == true)
        {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            sleep(POLL);
        }
        let profile = tempfile::tempdir().expect("profile dir");
        let created: Value = http
            .post(format!("{base}/session"))
            .json(&json!({"capabilities": {"alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": {
                    "binary": CHROMIUM,
                    "args": [
                        "--headless=new", "--no-sandbox", "--disable-gpu",
                        "--disable-dev-shm-usage", "--window-size=1280,1600",
                        format!("--user-data-dir={}", profile.path().display()),
                    ],
                },
            }}}))
            .send()
            .and_then(|answer| answer.json())
            .expect("new session");
        let session = created["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {created}"))
            .to_string();
        Browser {
            driver,
            base,
            session,
            http,
            _profile: profile,
        }
    }

    fn command(&self, method: reqwest::Method, path: &str, body: Value) -> Value {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let request = self.http.request(method, &url);
        let request = if body.is_null() {
            request
        } else {
            request.json(&body)
        };
        let answer: Value = request
            .send()
            .and_then(|answer| answer.json())
            .unwrap_or_else(|error| panic!("{path}: {error}"));
        if answer["value"]["error"].is_string() {
            panic!("{path}: {answer}");
        }
        answer["value"].clone()
    }

    pub(crate) fn goto(&self, url: &str) {
        self.command(reqwest::Method::POST, "/url", json!({"url": url}));
    }

    /// Runs `script` (a function body) in the page and returns its value.
    pub(crate) fn eval(&self, script: &str) -> Value {
        self.command(
            reqwest::Method::POST,
            "/execute/sync",
            json!({"script": script, "args": []}),
        )
    }

    fn element(&self, css: &str) -> String {
        let found = self.command(
            reqwest::Method::POST,
            "/element",
            json!({"using": "css selector", "value": css}),
        );
        found
            .as_object()
            .and_then(|object| object.values().next())
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("no element {css}: {found}"))
            .to_string()
    }

    pub(crate) fn type_into(&self, css: &str, text: &str) {
        let element = self.element(css);
        self.command(
            reqwest::Method::POST,
            &format!("/element/{element}/value"),
            json!({"text": text}),
        );
    }

    pub(crate) fn click(&self, css: &str) {
        let element = self.element(css);
        self.command(
            reqwest::Method::POST,
            &format!("/element/{element}/click"),
            json!({}),
        );
    }

    /// Waits until `condition` (a JavaScript expression) holds in the page: after a click
    /// that navigates, chromedriver may answer before the new page has loaded. Panics after
    /// 20 s, naming what it waited for.
    pub(crate) fn wait_until(&self, what: &str, condition: &str) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let script = format!("return document.readyState === 'complete' && Boolean({condition});");
        while self.eval(&script) != Value::Bool(true) {
            if std::time::Instant::now() > deadline {
                panic!("waited 20 s for {what} ({condition})");
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }

    /// The page as PNG.
    pub(crate) fn screenshot(&self) -> Vec<u8> {
        let encoded = self.command(reqwest::Method::GET, "/screenshot", Value::Null);
        base64::engine::general_purpose::STANDARD
            .decode(encoded.as_str().expect("base64 PNG"))
            .expect("decode the screenshot")
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self
            .http
            .delete(format!("{}/session/{}", self.base, self.session))
            .send();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        if std::thread::panicking() {
            let mut log = String::new();
            if let Some(stderr) = self.driver.stderr.as_mut() {
                let _ = stderr.read_to_string(&mut log);
            }
            eprintln!("--- chromedriver ---\n{log}");
        }
    }
}

/// How many distinct colours a PNG has, among a sample of its pixels (1 for a blank page).
pub(crate) fn colours(png: &[u8]) -> usize {
    let decoder = png::Decoder::new(std::io::Cursor::new(png));
    let mut reader = decoder.read_info().expect("a PNG");
    let mut pixels = vec![0; reader.output_buffer_size().expect("a size")];
    let frame = reader.next_frame(&mut pixels).expect("a frame");
    let step = frame.color_type.samples();
    let mut seen = std::collections::HashSet::new();
    for pixel in pixels[..frame.buffer_size()].chunks(step).step_by(7) {
        seen.insert(pixel.to_vec());
    }
    seen.len()
}

/// The list and an SLO's page during a firing incident from a real Prometheus: the firing row,
/// its budget figure against `/api/v1/slos`, filters, charts drawn (SVG paths, a screenshot
/// that is not blank), and a label that holds HTML rendered as text.
#[test]
fn the_status_page_shows_a_firing_incident_with_its_charts_and_escapes_labels() {
    let live = live(0.5, false);
    live.target.set_route(HOSTILE_ROUTE);
    let serve = live.setup.serve();
    serve.wait_for("the page to fire", || {
        serve
            .alerts()
            .into_iter()
            .find(|alert| alert["tier"] == "page" && alert["state"] == "firing")
    });
    // The history keeps 240 points over the period (15 s each over this spec's hour): wait
    // for a line of two points to draw.
    serve.wait_for("a burn line of two points", || {
        let (status, body) = serve.get(&format!("/slo/{SLO_ID}"));
        (status == 200 && body.contains(r#"<path class="burn" d="M"#) && body.contains(" L"))
            .then_some(())
    });
    let browser = Browser::start();
    browser.goto(&serve.url("/"));

    // The firing row, its hostile label shown as text, no script anywhere.
    let row = browser.eval(
        "const row = document.querySelector('tr.slo-row.firing');
         return row && {slo: row.dataset.slo,
                        labels: row.querySelector('td.labels').textContent,
                        budget: row.querySelector('.budget').textContent,
                        states: [...row.querySelectorAll('.state')].map(s => s.textContent)};",
    );
    assert_eq!(row["slo"], SLO_ID, "{row}");
    assert!(
        row["labels"].as_str().unwrap_or("").contains(HOSTILE_ROUTE),
        "{row}"
    );
    assert!(
        row["states"]
            .as_array()
            .is_some_and(|states| states.iter().any(|state| state == "page: firing")),
        "{row}"
    );
    let injected = browser.eval(
        "return {scripts: document.querySelectorAll('script').length,
                 images: document.querySelectorAll('img').length,
                 title: document.title};",
    );
    assert_eq!(injected["scripts"], 0, "{injected}");
    assert_eq!(injected["images"], 0, "{injected}");
    assert_eq!(injected["title"], "SLOs · burnwatch", "{injected}");

    // The budget figure is the API's (within the evaluations between the two reads).
    let shown: f64 = row["budget"]
        .as_str()
        .and_then(|text| text.trim_end_matches('%').parse().ok())
        .unwrap_or_else(|| panic!("{row}"));
    let api = serve.slos()["slos"][0]["instances"][0]["budget_remaining"]
        .as_f64()
        .expect("budget_remaining")
        * 100.0;
    assert!(
        (shown - api).abs() <= 0.05 * api.abs().max(1.0),
        "page {shown}%, API {api}%"
    );

    // Filters: firing keeps the row, stale shows none, a search for nothing shows none.
    let rows = |url: &str| -> u64 {
        browser.goto(&serve.url(url));
        browser
            .eval("return document.querySelectorAll('tr.slo-row').length;")
            .as_u64()
            .unwrap_or(0)
    };
    assert_eq!(rows("/?show=firing"), 1);
    assert_eq!(rows("/?show=stale"), 0);
    assert_eq!(rows("/?show=burning&sort=burn"), 1);
    browser.goto(&serve.url("/"));
    browser.type_into("#q", "no-such-service");
    browser.click("#apply");
    browser.wait_until(
        "the search's page",
        "location.search.includes('q=no-such-service')",
    );
    let after = browser.eval(
        "return {rows: document.querySelectorAll('tr.slo-row').length, search: location.search};",
    );
    assert_eq!(after["rows"], 0, "{after}");
    assert!(
        after["search"]
            .as_str()
            .unwrap_or("")
            .contains("q=no-such-service"),
        "{after}"
    );

    // The SLO's page: burn-rate paths with several points, the threshold, the firing
    // interval, the label as text.
    browser.goto(&serve.url("/"));
    browser.click("tr.slo-row a");
    browser.wait_until(
        "the SLO's page",
        "location.pathname.startsWith('/slo/') && document.querySelector('section.instance h3')",
    );
    let page = browser.eval(
        "return {url: location.pathname,
                 paths: [...document.querySelectorAll('svg.chart path.burn')].map(p => p.getAttribute('d')),
                 thresholds: document.querySelectorAll('svg.chart line.threshold').length,
                 firing: document.querySelectorAll('svg.chart rect.alert.page').length,
                 heading: document.querySelector('section.instance h3').textContent,
                 scripts: document.querySelectorAll('script').length};",
    );
    assert_eq!(page["url"], format!("/slo/{SLO_ID}"), "{page}");
    let paths = page["paths"].as_array().cloned().unwrap_or_default();
    assert!(paths.len() >= 2, "{page}");
    assert!(
        paths
            .iter()
            .any(|d| d.as_str().unwrap_or("").matches(" L").count() >= 1),
        "a burn line with at least two points: {page}"
    );
    assert!(page["thresholds"].as_u64().unwrap_or(0) >= 1, "{page}");
    assert!(page["firing"].as_u64().unwrap_or(0) >= 1, "{page}");
    assert!(
        page["heading"]
            .as_str()
            .unwrap_or("")
            .contains(HOSTILE_ROUTE),
        "{page}"
    );
    assert_eq!(page["scripts"], 0, "{page}");
    let png = browser.screenshot();
    assert!(
        colours(&png) > 8,
        "the screenshot is blank ({} bytes)",
        png.len()
    );
    if let Ok(path) = std::env::var("BURNWATCH_SCREENSHOT") {
        std::fs::write(path, &png).expect("write the screenshot");
    }
}
