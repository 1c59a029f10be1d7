//! A throwaway `redis-server` (Debian's) on a free loopback port, for cluster tests: in
//! memory only, killed on drop, and restartable on the same port.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::server::allocate_ports;

/// How long `redis-server` may take to answer `PING` after it started.
const STARTUP: Duration = Duration::from_secs(10);

/// A running `redis-server` on 127.0.0.1.
pub struct Redis {
    child: Option<Child>,
    /// Its TCP port.
    pub port: u16,
}

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redis").field("port", &self.port).finish()
    }
}

impl Redis {
    /// Starts `redis-server --port P --bind 127.0.0.1 --save '' --appendonly no` on a free
    /// port and waits until it answers `PING`.
    pub async fn start() -> anyhow::Result<Self> {
        let (port, _) = allocate_ports(0)?;
        let mut r = Redis { child: None, port };
        r.restart().await?;
        Ok(r)
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Whether the process runs.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Kills it (SIGKILL): everything it held is gone.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it (again, empty) on the same port and waits until it answers `PING`.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        let deadline = Instant::now() + STARTUP;
        let mut last = None;
        // The port may linger for a moment after a kill: retry the start until the deadline.
        while Instant::now() < deadline {
            let mut child = Command::new("redis-server")
                .args(["--port", &self.port.to_string()])
                .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
                .args(["--loglevel", "warning"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("spawning redis-server (apt-get install redis-server)")?;
            while Instant::now() < deadline {
                if let Ok(Some(status)) = child.try_wait() {
                    last = Some(format!("redis-server exited: {status}"));
                    break;
                }
                match self.ping().await {
                    Ok(()) => {
                        self.child = Some(child);
                        return Ok(());
                    }
                    Err(e) => last = Some(format!("{e:#}")),
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        bail!(
            "redis-server on port {} did not answer PING within {STARTUP:?}: {}",
            self.port,
            last.unwrap_or_default()
        )
    }

    async fn connection(&self) -> anyhow::Result<redis::aio::MultiplexedConnection> {
        let client = redis::Client::open(self.url())?;
        client
            .get_multiplexed_async_connection()
            .await
            .with_context(|| format!("connecting to {}", self.url()))
    }

    async fn ping(&self) -> anyhow::Result<()> {
        let mut con = self.connection().await?;
        let pong: String = redis::cmd("PING").query_async(&mut con).await?;
        anyhow::ensure!(pong == "PONG", "PING answered {pong:?}");
        Ok(())
    }

    /// Runs one command (`["HSET", "key", "field", "value"]`) and returns its reply.
    pub async fn cmd<T: redis::FromRedisValue>(&self, args: &[&str]) -> anyhow::Result<T> {
        let (name, rest) = args.split_first().context("an empty command")?;
        let mut con = self.connection().await?;
        redis::cmd(name)
            .arg(rest)
            .query_async(&mut con)
            .await
            .with_context(|| format!("redis {args:?}"))
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}
