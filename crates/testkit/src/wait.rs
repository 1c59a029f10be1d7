//! Polling with deadlines (tests never sleep to synchronise).

use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::bail;

/// How often conditions are re-checked.
pub const POLL_INTERVAL: Duration = Duration::from_millis(10);

/// Polls `cond` every [`POLL_INTERVAL`] until it holds; fails after `timeout`.
pub async fn poll_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("condition not met within {timeout:?}");
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Polls `f` until it returns `Some`; fails after `timeout`.
pub async fn poll_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> anyhow::Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            bail!("nothing within {timeout:?}");
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Polls the async `f` until it returns `Ok(Some(v))`; fails after `timeout` with the last
/// error or value description.
pub async fn poll_async<T, F, Fut>(timeout: Duration, mut f: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = Instant::now() + timeout;
    let mut last_err: Option<anyhow::Error> = None;
    loop {
        match f().await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last_err = Some(e),
        }
        if Instant::now() >= deadline {
            match last_err {
                Some(e) => bail!("not reached within {timeout:?}; last error: {e:#}"),
                None => bail!("not reached within {timeout:?}"),
            }
        }
        tokio::time::sleep(POLL_INTERVAL.max(Duration::from_millis(50))).await;
    }
}
