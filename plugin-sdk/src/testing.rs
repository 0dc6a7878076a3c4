//! An in-process stand-in for the host, for unit tests of plugin logic on the
//! build machine (`cargo test --target x86_64-unknown-linux-gnu`).
//!
//! Only compiled for targets other than `wasm32` (on `wasm32` the host
//! functions call the real host). Every thread has its own
//! state, so tests running in parallel do not see each other's counters.
//! The clock is the system clock until [`set_now_millis`] fixes it.
//!
//! ```
//! use wasmgate_plugin_sdk::{counters, now_millis, testing};
//!
//! testing::reset();
//! testing::set_now_millis(1_000);
//! assert_eq!(counters::increment("k", 1, 500), Ok(1));
//! assert_eq!(counters::increment("k", 1, 500), Ok(2));
//! testing::advance_millis(500);
//! assert_eq!(now_millis(), 1_500);
//! assert_eq!(counters::increment("k", 1, 500), Ok(1)); // expired, started again
//! ```

use std::{cell::RefCell, collections::HashMap};

use crate::Level;
use crate::connection::ClientCertificate;

#[derive(Default)]
struct TestHost {
    now_millis: Option<u64>,
    config: Option<String>,
    vars: Vec<(String, String)>,
    logs: Vec<(Level, String)>,
    counters: HashMap<String, (u64, u64)>,
    counters_error: Option<String>,
    /// `Some` while the request "came over TLS": the SNI name and client certificate.
    tls: Option<(Option<String>, Option<ClientCertificate>)>,
    /// GCRA cells: key → theoretical arrival time, in microseconds.
    cells: HashMap<String, u64>,
    /// Key-values: key → (value, expiry in ms).
    values: HashMap<String, (Vec<u8>, u64)>,
}

thread_local! {
    static HOST: RefCell<TestHost> = RefCell::new(TestHost::default());
}

fn with<T>(f: impl FnOnce(&mut TestHost) -> T) -> T {
    HOST.with(|host| f(&mut host.borrow_mut()))
}

/// Forgets everything: clock, config, variables, logs and counters.
pub fn reset() {
    with(|host| *host = TestHost::default());
}

/// Fixes the clock at `millis` since the Unix epoch.
pub fn set_now_millis(millis: u64) {
    with(|host| host.now_millis = Some(millis));
}

/// Moves the fixed clock forward (fixing it at the system time first if needed).
pub fn advance_millis(millis: u64) {
    let now = host::now_millis();
    with(|host| host.now_millis = Some(now + millis));
}

/// Sets what [`config_json`](crate::config_json) returns.
pub fn set_config(json: &str) {
    with(|host| host.config = Some(json.to_string()));
}

/// Makes every counter, limiter and key-value call fail with `error`, or work
/// again with `None`.
pub fn set_counters_error(error: Option<&str>) {
    with(|host| host.counters_error = error.map(str::to_string));
}

/// The request variables set so far with [`set_var`](crate::set_var).
pub fn vars() -> Vec<(String, String)> {
    with(|host| host.vars.clone())
}

/// The lines logged so far.
pub fn logs() -> Vec<(Level, String)> {
    with(|host| host.logs.clone())
}

/// Makes the request come over TLS with `server_name` (SNI) and, for mutual
/// TLS, a verified `client_certificate`; [`reset`] makes it plain again.
pub fn set_tls(server_name: Option<&str>, client_certificate: Option<ClientCertificate>) {
    with(|host| host.tls = Some((server_name.map(str::to_string), client_certificate)));
}

pub(crate) mod host {
    use super::with;
    use crate::Level;
    use crate::limiter::{Decision, WindowCount};

    pub fn log(level: Level, message: &str) {
        with(|host| host.logs.push((level, message.to_string())));
    }

    pub fn now_millis() -> u64 {
        with(|host| host.now_millis).unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |elapsed| {
                    u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
                })
        })
    }

    pub fn set_var(name: &str, value: &str) {
        with(|host| {
            host.vars.retain(|(existing, _)| existing != name);
            host.vars.push((name.to_string(), value.to_string()));
        });
    }

    pub fn config_json() -> String {
        with(|host| host.config.clone()).unwrap_or_else(|| "{}".to_string())
    }

    pub fn is_tls() -> bool {
        with(|host| host.tls.is_some())
    }

    pub fn server_name() -> Option<String> {
        with(|host| host.tls.as_ref().and_then(|(name, _)| name.clone()))
    }

    pub fn client_certificate() -> Option<crate::connection::ClientCertificate> {
        with(|host| host.tls.as_ref().and_then(|(_, cert)| cert.clone()))
    }

    fn failing() -> Result<(), String> {
        with(|host| host.counters_error.clone()).map_or(Ok(()), Err)
    }

    pub fn window(key: &str, delta: u64, window_ms: u64) -> Result<WindowCount, String> {
        failing()?;
        let length = window_ms.max(1);
        let now = now_millis();
        let index = now / length;
        let current = increment(&format!("\u{1}w|{key}|{index}"), delta, length * 2)?;
        let previous = match index.checked_sub(1) {
            Some(previous) => increment(&format!("\u{1}w|{key}|{previous}"), 0, length * 2)?,
            None => 0,
        };
        Ok(WindowCount {
            current,
            previous,
            elapsed_ms: now - index * length,
        })
    }

    pub fn gcra(
        key: &str,
        limit: u64,
        period_ms: u64,
        burst: u64,
        cost: u64,
    ) -> Result<Decision, String> {
        failing()?;
        if limit == 0 || burst == 0 || cost > burst {
            return Err("limit and burst must be at least 1, cost at most burst".into());
        }
        let now = now_millis().saturating_mul(1000);
        let interval = (period_ms.saturating_mul(1000) / limit).max(1);
        with(|host| {
            let tat = host.cells.get(key).copied().unwrap_or(now).max(now);
            let new_tat = tat + interval * cost;
            let tolerance = interval * burst;
            let allow_at = new_tat.saturating_sub(tolerance);
            if now < allow_at {
                return Ok(Decision {
                    allowed: false,
                    remaining: 0,
                    retry_after_ms: (allow_at - now).div_ceil(1000),
                    reset_after_ms: (tat - now).div_ceil(1000),
                });
            }
            host.cells.insert(key.to_string(), new_tat);
            Ok(Decision {
                allowed: true,
                remaining: (now + tolerance - new_tat) / interval,
                retry_after_ms: 0,
                reset_after_ms: (new_tat - now).div_ceil(1000),
            })
        })
    }

    pub fn kv_get(key: &str) -> Result<Option<Vec<u8>>, String> {
        failing()?;
        let now = now_millis();
        Ok(with(|host| {
            host.values
                .get(key)
                .filter(|(_, expires)| *expires > now)
                .map(|(value, _)| value.clone())
        }))
    }

    pub fn kv_set(key: &str, value: &[u8], ttl_ms: u64) -> Result<(), String> {
        failing()?;
        let expires = now_millis().saturating_add(ttl_ms);
        with(|host| {
            host.values
                .insert(key.to_string(), (value.to_vec(), expires))
        });
        Ok(())
    }

    pub fn kv_compare_and_set(
        key: &str,
        expected: Option<&[u8]>,
        value: &[u8],
        ttl_ms: u64,
    ) -> Result<bool, String> {
        if kv_get(key)?.as_deref() != expected {
            return Ok(false);
        }
        kv_set(key, value, ttl_ms)?;
        Ok(true)
    }

    pub fn kv_delete(key: &str) -> Result<bool, String> {
        let was = kv_get(key)?.is_some();
        with(|host| host.values.remove(key));
        Ok(was)
    }

    pub fn increment(key: &str, delta: u64, window_ms: u64) -> Result<u64, String> {
        let now = now_millis();
        with(|host| {
            if let Some(error) = &host.counters_error {
                return Err(error.clone());
            }
            let counter = host
                .counters
                .entry(key.to_string())
                .or_insert((0, now.saturating_add(window_ms)));
            if now >= counter.1 {
                *counter = (0, now.saturating_add(window_ms));
            }
            counter.0 = counter.0.saturating_add(delta);
            Ok(counter.0)
        })
    }
}
