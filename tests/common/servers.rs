//! Real PostgreSQL and Redis servers for tests and benches: each on a free loopback port in a
//! temporary directory, stopped when dropped (also when the test panics). Missing binaries
//! fail loudly with what to install: a test that needs a server never passes without one.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A free TCP port on loopback (bound and released; servers bind it right after).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free loopback port")
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn on_path(bin: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(bin))
            .find(|p| p.is_file())
    })
}

/// The folder holding `initdb` and `postgres`: `$MMTRADER_PG_BIN`, the newest
/// `/usr/lib/postgresql/*/bin`, or `PATH`.
fn pg_bin_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("MMTRADER_PG_BIN") {
        return PathBuf::from(d);
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("postgres").is_file().then_some((v, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return bin;
    }
    if let Some(p) = on_path("postgres") {
        return p.parent().map(Path::to_path_buf).unwrap_or_default();
    }
    panic!(
        "PostgreSQL server binaries (initdb, postgres) not found in /usr/lib/postgresql/*/bin, \
         $MMTRADER_PG_BIN or PATH. Install them (Debian/Ubuntu: `apt-get install postgresql`; \
         `make test` does this when run as root) and run the tests again."
    );
}

/// Runs `cmd` as the unprivileged `postgres` user when we are root (PostgreSQL refuses root).
fn as_pg_user(program: &Path, root: bool) -> Command {
    if root {
        let mut c = Command::new("setpriv");
        c.args([
            "--reuid=postgres",
            "--regid=postgres",
            "--init-groups",
            "--",
        ]);
        c.arg(program);
        c
    } else {
        Command::new(program)
    }
}

/// A PostgreSQL server of our own.
pub struct PgServer {
    dir: tempfile::TempDir,
    bin: PathBuf,
    root: bool,
    port: u16,
    child: Option<Child>,
}

impl PgServer {
    /// Initialises a cluster (trust auth on loopback, superuser `mmtrader`) and starts it.
    pub fn start() -> Self {
        let bin = pg_bin_dir();
        let root = is_root();
        if root {
            assert!(
                Command::new("id")
                    .arg("postgres")
                    .output()
                    .is_ok_and(|o| o.status.success()),
                "running as root needs the `postgres` system user to run PostgreSQL \
                 (created by Debian's postgresql package: `apt-get install postgresql`)"
            );
        }
        let dir = tempfile::Builder::new()
            .prefix("mmtrader-pg-")
            .tempdir()
            .expect("temp dir");
        let data = dir.path().join("data");
        if root {
            let ok = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "cannot chown {} to postgres", dir.path().display());
        }
        let out = as_pg_user(&bin.join("initdb"), root)
            .arg("-D")
            .arg(&data)
            .args(["-U", "mmtrader", "--auth=trust", "-E", "UTF8", "--no-sync"])
            .stdin(Stdio::null())
            .output()
            .expect("initdb could not be started");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut s = Self {
            dir,
            bin,
            root,
            port: free_port(),
            child: None,
        };
        s.restart();
        s
    }

    /// Connection string for tokio-postgres.
    pub fn url(&self) -> String {
        format!(
            "host=127.0.0.1 port={} user=mmtrader dbname=postgres",
            self.port
        )
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Starts (again) on the same data directory and port, and waits until it accepts
    /// connections.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "postgres already running");
        let log = std::fs::File::create(self.dir.path().join("server.log")).expect("log file");
        if self.root {
            let _ = Command::new("chown")
                .args(["postgres:postgres"])
                .arg(self.dir.path().join("server.log"))
                .status();
        }
        let child = as_pg_user(&self.bin.join("postgres"), self.root)
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-p", &self.port.to_string()])
            .args(["-c", "listen_addresses=127.0.0.1"])
            .args([
                "-c",
                &format!("unix_socket_directories={}", self.dir.path().display()),
            ])
            .args(["-c", "fsync=off", "-c", "synchronous_commit=off"])
            .args(["-c", "full_page_writes=off", "-c", "max_connections=50"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("postgres could not be started");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                let ready = Command::new(self.bin.join("pg_isready"))
                    .args([
                        "-h",
                        "127.0.0.1",
                        "-p",
                        &self.port.to_string(),
                        "-U",
                        "mmtrader",
                    ])
                    .stdout(Stdio::null())
                    .status()
                    .map(|s| s.success())
                    // Without pg_isready, an open port is the best sign available.
                    .unwrap_or(true);
                if ready {
                    return;
                }
            }
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                panic!(
                    "postgres exited with {status}: {}",
                    std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
                );
            }
            assert!(Instant::now() < deadline, "postgres did not start in 60 s");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops the server (fast shutdown) and waits for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-INT", &child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A Redis server of our own, without persistence.
pub struct RedisServer {
    dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts `redis-server` on a free loopback port and waits until it answers.
    pub fn start() -> Self {
        let bin = std::env::var_os("MMTRADER_REDIS_SERVER")
            .map(PathBuf::from)
            .or_else(|| on_path("redis-server"))
            .or_else(|| Some(PathBuf::from("/usr/bin/redis-server")).filter(|p| p.is_file()))
            .unwrap_or_else(|| {
                panic!(
                    "redis-server not found on PATH. Install it (Debian/Ubuntu: \
                     `apt-get install redis-server`; `make test` does this when run as root) \
                     and run the tests again."
                )
            });
        let dir = tempfile::Builder::new()
            .prefix("mmtrader-redis-")
            .tempdir()
            .expect("temp dir");
        let port = free_port();
        let child = Command::new(bin)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server could not be started");
        let mut s = Self {
            dir,
            port,
            child: Some(child),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(c) = s.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                panic!("redis-server exited with {status}");
            }
            assert!(
                Instant::now() < deadline,
                "redis-server did not start in 30 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        s
    }

    /// `redis://127.0.0.1:PORT/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
