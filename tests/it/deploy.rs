//! The container as shipped: the command lines the `Dockerfile` and the README's Kubernetes
//! Deployment make, run against the built binary. There is no container engine on the test
//! machines, so the image is emulated: the Dockerfile's final stage is read (`COPY` from the
//! build context, `RUN mkdir -p` and `sed -i`, `ENTRYPOINT`, `CMD`, `HEALTHCHECK`, all in
//! exec form), its files are laid out under a temp dir standing for the image's root, and
//! the argv is put together as Docker (`ENTRYPOINT` + `CMD`) and Kubernetes (`command`
//! replaces `ENTRYPOINT`, `args` replaces `CMD`) do. `burnwatch` is the built binary, absolute
//! paths are under the temp root, and the baked config listens on 127.0.0.1 at a free port
//! instead of 0.0.0.0:9099.

use std::collections::BTreeMap;
use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use serde_json::Value;

const REPO: &str = env!("CARGO_MANIFEST_DIR");
/// Where the image keeps its config (the directory a mounted config replaces).
const CONFIG_DIR: &str = "/etc/burnwatch";

/// The final stage of the Dockerfile, as far as running the image goes.
#[derive(Debug, Default)]
struct Image {
    /// `COPY` sources (relative to the build context) and destinations.
    copies: Vec<(String, String)>,
    /// `RUN` steps that shape files: `mkdir -p` directories and `sed -i` edits, in order.
    steps: Vec<Step>,
    entrypoint: Vec<String>,
    cmd: Vec<String>,
    healthcheck: Vec<String>,
    exposed: Vec<String>,
}

#[derive(Debug)]
enum Step {
    Copy(String, String),
    Mkdir(Vec<String>),
    /// `sed -i` expressions (`s<d>pattern<d>replacement<d>`) and the file they edit.
    Sed(Vec<String>, String),
}

/// The Dockerfile's logical lines (continuations joined, comments dropped).
fn instructions(text: &str) -> Vec<String> {
    let mut lines = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(head) => {
                current.push_str(head);
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                lines.push(std::mem::take(&mut current));
            }
        }
    }
    lines
}

/// A JSON exec-form array (`["a", "b"]`), as `ENTRYPOINT`, `CMD` and `HEALTHCHECK CMD` must be.
fn exec_form(what: &str, text: &str) -> Vec<String> {
    serde_json::from_str(text.trim())
        .unwrap_or_else(|e| panic!("{what} is not in exec form (a JSON array): {text} ({e})"))
}

/// Splits a shell command into words: whitespace-separated, single and double quotes kept
/// together (enough for the Dockerfile's RUN lines).
fn shell_words(text: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quote = None;
    let mut in_word = false;
    for c in text.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => word.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                in_word = true;
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            (None, c) => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(word);
    }
    words
}

fn parse_dockerfile(text: &str) -> Image {
    let mut image = Image::default();
    for line in instructions(text) {
        let (keyword, rest) = line.split_once(' ').unwrap_or((&line, ""));
        match keyword.to_ascii_uppercase().as_str() {
            // Each stage starts afresh; the last one is the image.
            "FROM" => image = Image::default(),
            "COPY" => {
                let words = shell_words(rest);
                if words.iter().any(|word| word.starts_with("--from")) {
                    continue; // the binary from the build stage: the test's own build
                }
                let (destination, sources) = words.split_last().expect("COPY needs a target");
                for source in sources {
                    image.copies.push((source.clone(), destination.clone()));
                    image
                        .steps
                        .push(Step::Copy(source.clone(), destination.clone()));
                }
            }
            "RUN" => {
                for command in rest.split("&&") {
                    let words = shell_words(command);
                    match words.first().map(String::as_str) {
                        Some("mkdir") => image.steps.push(Step::Mkdir(
                            words[1..]
                                .iter()
                                .filter(|word| !word.starts_with('-'))
                                .cloned()
                                .collect(),
                        )),
                        Some("sed") => {
                            assert!(
                                words.contains(&"-i".to_string()),
                                "sed without -i: {command}"
                            );
                            let mut expressions = Vec::new();
                            let mut file = None;
                            let mut words = words[1..].iter().filter(|word| *word != "-i");
                            while let Some(word) = words.next() {
                                if word == "-e" {
                                    expressions.push(words.next().expect("-e EXPR").clone());
                                } else if expressions.is_empty() {
                                    expressions.push(word.clone());
                                } else {
                                    file = Some(word.clone());
                                }
                            }
                            image
                                .steps
                                .push(Step::Sed(expressions, file.expect("sed's file")));
                        }
                        _ => {} // packages, users, ownership: nothing the test needs
                    }
                }
            }
            "ENTRYPOINT" => image.entrypoint = exec_form("ENTRYPOINT", rest),
            "CMD" => image.cmd = exec_form("CMD", rest),
            "HEALTHCHECK" => {
                let (_, command) = rest
                    .split_once("CMD ")
                    .unwrap_or_else(|| panic!("HEALTHCHECK without CMD: {rest}"));
                image.healthcheck = exec_form("HEALTHCHECK CMD", command);
            }
            "EXPOSE" => image.exposed = shell_words(rest),
            _ => {}
        }
    }
    image
}

/// One `sed` substitution applied as sed does without `g`: the first match on each line.
fn sed(expression: &str, text: &str) -> String {
    let mut chars = expression.chars();
    assert_eq!(chars.next(), Some('s'), "only s commands: {expression}");
    let delimiter = chars.next().expect("a delimiter");
    let parts: Vec<&str> = expression[2..].split(delimiter).collect();
    assert!(
        parts.len() == 3 && parts[2].is_empty(),
        "s{delimiter}pattern{delimiter}replacement{delimiter} without flags: {expression}"
    );
    let pattern = regex::Regex::new(parts[0]).expect("a regex the test can read");
    text.lines()
        .map(|line| {
            pattern
                .replacen(line, 1, regex::NoExpand(parts[1]))
                .into_owned()
                + "\n"
        })
        .collect()
}

/// Lays the image's files out under `root`, as the Dockerfile's final stage makes them.
fn build_root(image: &Image, root: &Path) {
    let inside = |path: &str| root.join(path.trim_start_matches('/'));
    for step in &image.steps {
        match step {
            Step::Mkdir(dirs) => {
                for dir in dirs {
                    fs::create_dir_all(inside(dir)).expect("mkdir");
                }
            }
            Step::Copy(source, destination) => {
                let from = Path::new(REPO).join(source);
                if from.is_dir() {
                    copy_dir(&from, &inside(destination));
                } else {
                    let to = if destination.ends_with('/') {
                        inside(destination).join(from.file_name().expect("a file name"))
                    } else {
                        inside(destination)
                    };
                    fs::create_dir_all(to.parent().expect("a parent")).expect("mkdir");
                    fs::copy(&from, &to).unwrap_or_else(|e| panic!("COPY {source}: {e}"));
                }
            }
            Step::Sed(expressions, file) => {
                let path = inside(file);
                let mut text = fs::read_to_string(&path).expect("sed's file");
                for expression in expressions {
                    text = sed(expression, &text);
                }
                fs::write(&path, text).expect("write");
            }
        }
    }
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).expect("mkdir");
    for entry in fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("dir entry");
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

/// The README's Kubernetes Deployment (the YAML block that holds `kind: Deployment`).
fn readme_deployment() -> Value {
    let readme = fs::read_to_string(Path::new(REPO).join("README.md")).expect("README.md");
    let block = readme
        .split("```yaml\n")
        .skip(1)
        .filter_map(|rest| rest.split_once("\n```").map(|(block, _)| block))
        .find(|block| block.contains("kind: Deployment"))
        .expect("the README has a Kubernetes Deployment");
    let document = block
        .split("\n---\n")
        .find(|document| document.contains("kind: Deployment"))
        .expect("the Deployment's document");
    serde_saphyr::from_str(document).expect("the README's Deployment is YAML")
}

fn strings(value: &Value) -> Option<Vec<String>> {
    value.as_array().map(|items| {
        items
            .iter()
            .map(|item| match item {
                Value::String(text) => text.clone(),
                other => other.to_string(),
            })
            .collect()
    })
}

/// What a container runs: Kubernetes's `command` replaces the image's ENTRYPOINT and `args`
/// its CMD; `command` without `args` runs without the image's CMD.
fn kubernetes_argv(image: &Image, container: &Value) -> Vec<String> {
    match (strings(&container["command"]), strings(&container["args"])) {
        (None, None) => [image.entrypoint.clone(), image.cmd.clone()].concat(),
        (None, Some(args)) => [image.entrypoint.clone(), args].concat(),
        (Some(command), None) => command,
        (Some(command), Some(args)) => [command, args].concat(),
    }
}

/// `argv` as it runs in the emulated image: `burnwatch` is the test's build, absolute paths
/// lie under `root`.
fn in_root(argv: &[String], root: &Path) -> Command {
    let (program, args) = argv.split_first().expect("a program");
    assert!(
        program == "burnwatch" || program == "/usr/local/bin/burnwatch",
        "the container runs {program:?}, not burnwatch: {argv:?}"
    );
    let mut command = Command::new(env!("CARGO_BIN_EXE_burnwatch"));
    for arg in args {
        if arg.starts_with('/') {
            command.arg(root.join(arg.trim_start_matches('/')));
        } else {
            command.arg(arg);
        }
    }
    command.current_dir(root).env("BURNWATCH_LOG", "info");
    command
}

/// The value of `--flag` in an argv.
fn flag<'a>(argv: &'a [String], name: &str) -> Option<&'a str> {
    argv.iter()
        .position(|arg| arg == name)
        .and_then(|at| argv.get(at + 1))
        .map(String::as_str)
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local addr").port()
}

/// A running container command; killed when dropped.
struct Running {
    child: Child,
    log: PathBuf,
}

impl Running {
    fn start(mut command: Command, log: PathBuf) -> Running {
        let out = fs::File::create(&log).expect("log file");
        let child = command
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log file"))
            .stderr(out)
            .spawn()
            .expect("run burnwatch");
        Running { child, log }
    }

    fn output(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until `url` answers 200; panics with the output if the process exits first.
    fn wait_healthy(&mut self, url: &str, what: &str) {
        burnwatch::source::prometheus::install_crypto_provider();
        let http = reqwest::blocking::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(2))
            .build()
            .expect("http client");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(response) = http.get(url).send()
                && response.status().as_u16() == 200
            {
                return;
            }
            if let Some(status) = self.child.try_wait().expect("poll") {
                panic!(
                    "{what} exited ({status}) instead of serving:\n{}",
                    self.output()
                );
            }
            assert!(
                Instant::now() < deadline,
                "{what} does not answer {url}:\n{}",
                self.output()
            );
            sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The image's root with its files, its config made to listen on 127.0.0.1:`port`.
fn image_root(image: &Image, port: u16) -> tempfile::TempDir {
    let root = tempfile::Builder::new()
        .prefix("burnwatch-image-")
        .tempdir()
        .expect("temp dir");
    build_root(image, root.path());
    let config = root.path().join("etc/burnwatch/burnwatch.yaml");
    let text = fs::read_to_string(&config).expect("the image has /etc/burnwatch/burnwatch.yaml");
    assert!(
        text.contains("listen: 0.0.0.0:9099"),
        "the image's config listens on all interfaces:\n{text}"
    );
    fs::write(
        &config,
        text.replace("listen: 0.0.0.0:9099", &format!("listen: 127.0.0.1:{port}")),
    )
    .expect("write config");
    root
}

/// `docker run burnwatch` and the README's Deployment both start `serve` on the image's
/// config; the image's HEALTHCHECK, run as Docker runs it, finds the daemon at the port the
/// config names; and every spec the baked config loads lies under /etc/burnwatch, so a
/// config mounted there never loads the demo SLO behind the user's back.
#[test]
fn image_and_kubernetes_deployment_start_serve_and_the_healthcheck_finds_it() {
    let image = parse_dockerfile(
        &fs::read_to_string(Path::new(REPO).join("Dockerfile")).expect("Dockerfile"),
    );
    assert!(!image.entrypoint.is_empty(), "no ENTRYPOINT: {image:?}");
    assert!(!image.healthcheck.is_empty(), "no HEALTHCHECK: {image:?}");
    let deployment = readme_deployment();
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];

    // The Deployment's port and config mount fit the image.
    let port = container["ports"][0]["containerPort"]
        .as_u64()
        .map(|p| p.to_string());
    assert!(
        port.as_deref() == Some("9099") && image.exposed.iter().any(|p| p == "9099"),
        "containerPort {port:?}, EXPOSE {:?}",
        image.exposed
    );
    let mounts: BTreeMap<String, String> = container["volumeMounts"]
        .as_array()
        .expect("volumeMounts")
        .iter()
        .map(|mount| {
            (
                mount["mountPath"].as_str().expect("mountPath").to_string(),
                mount["name"].as_str().expect("name").to_string(),
            )
        })
        .collect();
    assert!(
        mounts.contains_key(CONFIG_DIR),
        "the config is mounted: {mounts:?}"
    );

    let runs = [
        (
            "docker run burnwatch",
            [image.entrypoint.clone(), image.cmd.clone()].concat(),
        ),
        (
            "the README's Kubernetes Deployment",
            kubernetes_argv(&image, container),
        ),
    ];
    let mut reports = Vec::new();
    for (what, argv) in runs {
        assert_eq!(
            argv.get(1).map(String::as_str),
            Some("serve"),
            "{what}: {argv:?}"
        );
        assert_eq!(
            flag(&argv, "--config"),
            Some("/etc/burnwatch/burnwatch.yaml"),
            "{what}: {argv:?}"
        );
        let port = free_port();
        let root = image_root(&image, port);
        let mut running =
            Running::start(in_root(&argv, root.path()), root.path().join("serve.log"));
        running.wait_healthy(&format!("http://127.0.0.1:{port}/-/healthy"), what);

        // The HEALTHCHECK as Docker runs it (exec form, without the ENTRYPOINT).
        let output = in_root(&image.healthcheck, root.path())
            .output()
            .expect("run the HEALTHCHECK");
        assert!(
            output.status.success(),
            "{what}: the HEALTHCHECK {:?} fails against the daemon on port {port}: {}{}",
            image.healthcheck,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        drop(running);
        // And it fails once nothing listens there.
        let output = in_root(&image.healthcheck, root.path())
            .output()
            .expect("run the HEALTHCHECK");
        assert!(
            !output.status.success(),
            "{what}: healthy with nothing listening"
        );
        reports.push(format!("{what}: {argv:?}"));
        if what.contains("Kubernetes") {
            // Where the state goes must be writable in the pod: a volume of its own.
            let state_dir = flag(&argv, "--state-dir").unwrap_or_else(|| {
                panic!(
                    "{what}: no --state-dir (the default `data` is under /, not writable): {argv:?}"
                )
            });
            let volume = mounts
                .get(state_dir)
                .unwrap_or_else(|| panic!("{what}: nothing mounted at {state_dir}: {mounts:?}"));
            let volumes = pod["volumes"].as_array().expect("volumes");
            let spec = volumes
                .iter()
                .find(|v| v["name"] == volume.as_str())
                .expect("the state volume");
            assert!(
                spec.get("emptyDir").is_some() || spec.get("persistentVolumeClaim").is_some(),
                "{what}: {state_dir} is not a writable volume: {spec}"
            );
        }
    }

    // The baked config's specs lie under the config directory a mount replaces, and no
    // spec is copied anywhere else.
    let probe_root = image_root(&image, free_port());
    let config_path = probe_root.path().join("etc/burnwatch/burnwatch.yaml");
    let config = match burnwatch::config::load_file(&config_path) {
        Ok(burnwatch::config::Document::Daemon(config)) => config,
        other => panic!("the image's config: {other:?}"),
    };
    let config_dir = probe_root.path().join(CONFIG_DIR.trim_start_matches('/'));
    for rules in &config.rules {
        let resolved = rules
            .canonicalize()
            .unwrap_or_else(|e| panic!("the image's config loads {}: {e}", rules.display()));
        assert!(
            resolved.starts_with(config_dir.canonicalize().expect("config dir")),
            "the image's config loads {} from outside {CONFIG_DIR}: a config mounted at \
             {CONFIG_DIR} would still load it",
            resolved.display()
        );
    }
    for (source, destination) in &image.copies {
        assert!(
            destination.starts_with(CONFIG_DIR),
            "COPY {source} {destination}: files the image's config may load outside \
             {CONFIG_DIR} outlive a config mounted there"
        );
    }
    eprintln!("{}", reports.join("\n"));
}
