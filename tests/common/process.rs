//! Runs the real `wxcourier` binary with a config written for one test.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use super::kit::WorkerConfig;
// Where the tests that run the binary have always found them; not every test uses both.
#[allow(unused_imports)]
pub use super::kit::{signal, wait_exit};

/// Fast retries and a short drain, so a test never waits long for either.
const TEST_TABLES: &str = r#"[retry]
initial_delay = "200ms"
max_delay = "800ms"
pause = "300ms"
max_pause = "600ms"
max_attempts = 4
[worker]
drain_timeout = "10s"
"#;

pub struct Binary {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub app: String,
}

impl Binary {
    /// Writes a config for `app` pointing at `base_url`; `extra` is appended TOML.
    pub fn new(app: &str, base_url: &str, extra: &str) -> Self {
        Self::with(app, base_url, "rate_per_second = 150\nburst = 10", extra)
    }

    /// As [`Binary::new`], with `app_keys` (e.g. `rate_per_second = 50`) in the app's table.
    pub fn with(app: &str, base_url: &str, app_keys: &str, extra: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let amqp = format!(
            "management_url = \"{}\"\nprefetch = 50",
            super::management_url()
        );
        let config = WorkerConfig {
            base_url,
            amqp: &amqp,
            wechat: "timeout = \"2s\"\ndaily_quota_refresh = \"0s\"",
            tables: TEST_TABLES,
            apps: &[app.to_owned()],
            app_keys,
            tail: extra,
        }
        .write(dir.path(), "wxcourier.toml");
        Self {
            dir,
            config,
            app: app.into(),
        }
    }

    /// `wxcourier VERB --config …`; VERB may have words, as in `dead list`.
    pub fn command(&self, verb: &str) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_wxcourier"));
        c.args(verb.split_whitespace())
            .arg("--config")
            .arg(&self.config);
        c.env(
            format!("WXCOURIER_APPS__{}__SECRET", self.app.to_ascii_uppercase()),
            "secret",
        );
        c.env("RUST_LOG", "warn");
        c
    }

    pub fn spawn_worker(&self) -> Child {
        self.command("run")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap()
    }
}

/// `Command::output` with a deadline, so a verb that hangs fails its test instead of the run.
pub trait OutputWithin {
    fn output_within(&mut self, limit: std::time::Duration) -> std::process::Output;
}

impl OutputWithin for Command {
    fn output_within(&mut self, limit: std::time::Duration) -> std::process::Output {
        use std::io::Read;
        let mut child = self
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Read both pipes while waiting, so a chatty child never blocks on a full pipe.
        let drain = |mut pipe: Box<dyn Read + Send>| {
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                let _ = pipe.read_to_end(&mut buf);
                buf
            })
        };
        let stdout = drain(Box::new(child.stdout.take().unwrap()));
        let stderr = drain(Box::new(child.stderr.take().unwrap()));
        let status = wait_exit(&mut child, limit);
        let stdout = stdout.join().unwrap();
        let stderr = stderr.join().unwrap();
        let Some(status) = status else {
            panic!(
                "{self:?} did not exit within {limit:?}; stderr:\n{}",
                String::from_utf8_lossy(&stderr)
            );
        };
        std::process::Output {
            status,
            stdout,
            stderr,
        }
    }
}
