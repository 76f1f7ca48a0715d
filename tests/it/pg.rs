//! A real PostgreSQL (Debian's `postgresql` package, version 15) as a test fixture: `initdb`
//! a cluster in a fresh temp dir, start `postgres` on a free loopback port with its unix
//! sockets in that dir, and wait until it accepts connections. `stop` and `start` (or
//! `restart`) take the server down and up again on the same port with the same data, to
//! test what clients do meanwhile.
//!
//! PostgreSQL refuses to run as root. When the tests run as root, the cluster belongs to the
//! `postgres` system user the package creates: the temp dir is handed to that user, and
//! `initdb` and `postgres` run with its uid and gid. Otherwise they run as the current user.
//!
//! Trust authentication, on 127.0.0.1 only (plus the unix sockets in the temp dir); fsync,
//! synchronous commit and full-page writes off: the data is thrown away with the dir.
//!
//! The binaries come from Debian's `postgresql` package; `./scripts/test` installs it. If they
//! are missing the fixture panics, naming the package: a test never skips silently.

use std::fs::{self, File};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

// `super::`, not `crate::`: the library's tests include this file too (`store::testing`).
use super::child::{Retry, log_tail};

/// The PostgreSQL major version the fixture is written against.
const VERSION: &str = "15";
/// How long a start waits until the server accepts connections, per attempt.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// Attempts at finding a free port (another process may grab the one we picked).
const PORT_ATTEMPTS: usize = 5;
/// The database and superuser tests connect as (`initdb -U`).
pub const USER: &str = "postgres";
pub const DATABASE: &str = "postgres";

pub struct Pg {
    // None while stopped.
    child: Option<Child>,
    port: u16,
    bin: PathBuf,
    data: PathBuf,
    sockets: PathBuf,
    log_path: PathBuf,
    /// (uid, gid) the server runs as; None: the current user.
    owner: Option<(u32, u32)>,
    // Removed after `drop` stopped the server.
    dir: tempfile::TempDir,
}

impl Pg {
    /// Creates a cluster in a fresh temp dir and starts it on 127.0.0.1:<free port>.
    /// Panics with `initdb`'s or the server's output on failure.
    pub fn start() -> Pg {
        let bin = binaries();
        let owner = server_owner();
        let dir = tempfile::Builder::new()
            .prefix("burnwatch-pg-")
            .tempdir()
            .expect("create temp dir for postgresql");
        let data = dir.path().join("data");
        let sockets = dir.path().join("sockets");
        fs::create_dir(&sockets).expect("create socket dir");
        let log_path = dir.path().join("postgres.log");
        File::create(&log_path).expect("create postgres log");
        if let Some((uid, gid)) = owner {
            for path in [dir.path(), &sockets, &log_path] {
                std::os::unix::fs::chown(path, Some(uid), Some(gid))
                    .unwrap_or_else(|e| panic!("chown {} to postgres: {e}", path.display()));
            }
        }
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o700)).expect("chmod temp dir");

        let mut initdb = Command::new(bin.join("initdb"));
        initdb
            .arg("-D")
            .arg(&data)
            .args(["-U", USER, "--auth=trust", "--encoding=UTF8", "--no-sync"])
            .arg("--no-instructions");
        let out = as_owner(&mut initdb, owner)
            .output()
            .unwrap_or_else(|e| panic!("cannot run initdb: {e}"));
        if !out.status.success() {
            panic!(
                "initdb failed ({}):\n{}\n{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        // Trust on loopback IPv4 and the sockets in the temp dir, nothing else.
        let hba = "local all all trust\nhost all all 127.0.0.1/32 trust\n";
        fs::write(data.join("pg_hba.conf"), hba).expect("write pg_hba.conf");

        let mut pg = Pg {
            child: None,
            port: 0,
            bin,
            data,
            sockets,
            log_path,
            owner,
            dir,
        };
        let mut failures = Vec::new();
        for _ in 0..PORT_ATTEMPTS {
            pg.port = free_port();
            pg.spawn();
            match pg.wait_ready() {
                Ok(()) => return pg,
                Err(Retry(why)) => {
                    failures.push(format!("port {}: {why}", pg.port));
                    pg.kill();
                }
            }
        }
        panic!(
            "postgresql could not start after {PORT_ATTEMPTS} attempts:\n{}\n{}",
            failures.join("\n"),
            pg.log_tail()
        );
    }

    /// `postgres://postgres@127.0.0.1:PORT/postgres` (trust auth: no password).
    pub fn url(&self) -> String {
        format!("postgres://{USER}@127.0.0.1:{}/{DATABASE}", self.port)
    }

    /// Stops the server with a fast shutdown (SIGINT: connections are terminated, the data is
    /// kept) and waits for it to exit. Does nothing if already stopped.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(&child, libc::SIGINT);
            wait_or_kill(&mut child, Duration::from_secs(30));
        }
    }

    /// Starts the server again after `stop`, on the same port with the same data, and waits
    /// until it accepts connections. Panics if it does not get there in time.
    pub fn start_again(&mut self) {
        assert!(
            self.child.is_none(),
            "start_again: postgresql is still running; stop it first"
        );
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            self.spawn();
            match self.wait_ready() {
                Ok(()) => return,
                Err(Retry(why)) => {
                    self.kill();
                    if Instant::now() > deadline {
                        panic!(
                            "postgresql could not start again on port {}: {why}\n{}",
                            self.port,
                            self.log_tail()
                        );
                    }
                    sleep(Duration::from_millis(200));
                }
            }
        }
    }

    /// `stop`, then `start_again`.
    pub fn restart(&mut self) {
        self.stop();
        self.start_again();
    }

    /// Runs `sql` with `psql` as the superuser over the unix socket; panics on failure.
    /// Returns psql's unaligned, tuples-only output.
    pub fn psql(&self, sql: &str) -> String {
        let out = Command::new(self.bin.join("psql"))
            .arg("-h")
            .arg(&self.sockets)
            .args(["-p", &self.port.to_string(), "-U", USER, "-d", DATABASE])
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql])
            .output()
            .unwrap_or_else(|e| panic!("cannot run psql: {e}"));
        if !out.status.success() {
            panic!(
                "psql `{sql}` failed ({}):\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    pub fn log_tail(&self) -> String {
        log_tail("postgres", &self.log_path)
    }

    /// Turns TLS on (`ssl = on`) with a server certificate for the name `localhost` (not for
    /// 127.0.0.1) signed by a test CA, and restarts the server. Returns the paths of that CA's
    /// certificate and of another CA's, which did not sign it. Made with `openssl`.
    pub fn enable_tls(&mut self) -> (PathBuf, PathBuf) {
        let tls = self.dir.path().join("tls");
        fs::create_dir_all(&tls).expect("create tls dir");
        let openssl = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(&tls)
                .output()
                .unwrap_or_else(|e| panic!("cannot run openssl: {e}"));
            assert!(
                out.status.success(),
                "openssl {args:?} failed:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        for ca in ["ca", "other-ca"] {
            openssl(&[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-keyout",
                &format!("{ca}.key"),
                "-out",
                &format!("{ca}.crt"),
                "-subj",
                &format!("/CN=burnwatch test {ca}"),
            ]);
        }
        fs::write(
            tls.join("server.ext"),
            "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\n\
             keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
        )
        .expect("write server.ext");
        openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ]);
        openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-out",
            "server.crt",
            "-extfile",
            "server.ext",
        ]);
        for file in ["server.key", "server.crt"] {
            let path = tls.join(file);
            if let Some((uid, gid)) = self.owner {
                std::os::unix::fs::chown(&path, Some(uid), Some(gid)).expect("chown tls file");
            }
            fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).expect("chmod");
        }
        let mut conf = fs::read_to_string(self.data.join("postgresql.conf")).expect("read conf");
        conf.push_str(&format!(
            "\nssl = on\nssl_cert_file = '{}'\nssl_key_file = '{}'\n",
            tls.join("server.crt").display(),
            tls.join("server.key").display()
        ));
        fs::write(self.data.join("postgresql.conf"), conf).expect("write conf");
        self.restart();
        (tls.join("ca.crt"), tls.join("other-ca.crt"))
    }

    /// The port the server listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    fn spawn(&mut self) {
        let log = fs::OpenOptions::new()
            .append(true)
            .open(&self.log_path)
            .expect("open postgres log");
        let mut command = Command::new(self.bin.join("postgres"));
        command
            .arg("-D")
            .arg(&self.data)
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-k")
            .arg(&self.sockets)
            .args(["-c", "listen_addresses=127.0.0.1"])
            .args(["-c", "fsync=off", "-c", "synchronous_commit=off"])
            .args(["-c", "full_page_writes=off"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log file handle"))
            .stderr(log);
        let child = as_owner(&mut command, self.owner)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run postgres: {e}"));
        self.child = Some(child);
    }

    /// Waits until `pg_isready` says the server accepts connections on 127.0.0.1:port.
    fn wait_ready(&mut self) -> Result<(), Retry> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                return Err(Retry(format!("postgres exited ({status})")));
            }
            let ready = Command::new(self.bin.join("pg_isready"))
                .args(["-q", "-h", "127.0.0.1", "-p", &self.port.to_string()])
                .args(["-U", USER, "-d", DATABASE, "-t", "1"])
                .status()
                .unwrap_or_else(|e| panic!("cannot run pg_isready: {e}"));
            if ready.success() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(Retry(format!(
                    "not accepting connections after {READY_TIMEOUT:?}"
                )));
            }
            sleep(Duration::from_millis(50));
        }
    }

    /// Immediate shutdown (SIGQUIT), SIGKILL if that does not end it quickly.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(&child, libc::SIGQUIT);
            wait_or_kill(&mut child, Duration::from_secs(10));
        }
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        // The temp dir goes with `dir`'s own drop, after the server has exited.
        self.kill();
    }
}

/// The bin dir of Debian's PostgreSQL 15; panics naming the package when it is missing.
fn binaries() -> PathBuf {
    let bin = PathBuf::from(format!("/usr/lib/postgresql/{VERSION}/bin"));
    for tool in ["initdb", "postgres", "pg_isready", "psql"] {
        if !bin.join(tool).exists() {
            panic!(
                "{} is missing: the PostgreSQL tests need Debian's `postgresql` package \
                 (PostgreSQL {VERSION}); run ./scripts/test, which installs it, or \
                 `apt-get install postgresql`",
                bin.join(tool).display()
            );
        }
    }
    bin
}

/// As root: the `postgres` system user's (uid, gid); panics if it does not exist.
fn server_owner() -> Option<(u32, u32)> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    let name = std::ffi::CString::new("postgres").expect("no NUL");
    // SAFETY: a valid NUL-terminated name; the result is read at once, before any other
    // getpw* call could reuse its buffer.
    let entry = unsafe { libc::getpwnam(name.as_ptr()) };
    if entry.is_null() {
        panic!(
            "running as root, and there is no `postgres` user to run PostgreSQL as \
             (PostgreSQL refuses root); Debian's `postgresql` package creates it: \
             `apt-get install postgresql`"
        );
    }
    // SAFETY: non-null pointer to the passwd entry getpwnam returned.
    let (uid, gid) = unsafe { ((*entry).pw_uid, (*entry).pw_gid) };
    Some((uid, gid))
}

fn as_owner(command: &mut Command, owner: Option<(u32, u32)>) -> &mut Command {
    if let Some((uid, gid)) = owner {
        command.uid(uid).gid(gid).env("HOME", "/var/lib/postgresql");
    }
    command
}

fn signal(child: &Child, signal: libc::c_int) {
    // SAFETY: kill(2) on our own child's pid.
    unsafe {
        libc::kill(child.id() as libc::pid_t, signal);
    }
}

fn wait_or_kill(child: &mut Child, patience: Duration) {
    let deadline = Instant::now() + patience;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local addr").port()
}

/// Not a test of burnwatch: the fixture starts, answers, survives a restart and says how
/// long its start took.
#[test]
fn pg_fixture_starts_answers_and_restarts() {
    let started = Instant::now();
    let mut pg = Pg::start();
    eprintln!("postgresql fixture started in {:?}", started.elapsed());
    assert!(pg.url().starts_with("postgres://postgres@127.0.0.1:"));
    pg.psql("CREATE TABLE kept (v int); INSERT INTO kept VALUES (42)");
    assert_eq!(pg.psql("SHOW server_version_num").get(..2), Some("15"));
    assert_eq!(pg.psql("SHOW fsync"), "off");
    let restarted = Instant::now();
    pg.restart();
    eprintln!("postgresql fixture restarted in {:?}", restarted.elapsed());
    assert_eq!(pg.psql("SELECT v FROM kept"), "42");
    let dir = pg.dir.path().to_path_buf();
    drop(pg);
    assert!(
        !Path::new(&dir).exists(),
        "temp dir {} left behind",
        dir.display()
    );
}
