//! State in Redis or Redis Cluster. Every operation is one command or one Lua script
//! (`EVALSHA`, loaded on first use), so it is one atomic round trip; windows and GCRA use
//! Redis' clock (`TIME` inside the script), so the gateways' clocks never matter.
//!
//! Keys are `<prefix>:<kind>:{<plugin>|<key>}`: namespaced by plugin. Every operation
//! touches exactly the one key it declares (a window pair is one hash), and the braces are a
//! cluster hash tag, so keys derived from one plugin key always share a slot.

use std::sync::LazyLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Script, Value};
use tokio::sync::OnceCell;

use super::op::{GcraDecision, Op, Outcome, WindowCount, emission_interval_us};
use crate::config::RedisConfig;

/// Why a Redis call failed.
#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    /// The URL (or cluster setup) was refused by the client library.
    #[error("invalid Redis settings: {0}")]
    Settings(String),
    /// The call did not answer within `state.timeout`.
    #[error("Redis did not answer within the state timeout")]
    Timeout,
    /// The connection failed or could not be made.
    #[error("Redis is unreachable ({0})")]
    Connection(String),
    /// Redis answered with an error.
    #[error("Redis refused the call ({0})")]
    Server(String),
    /// The answer had an unexpected shape.
    #[error("Redis answered unexpectedly ({0})")]
    Answer(String),
}

impl RedisError {
    /// A short fixed label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            RedisError::Settings(_) => "settings",
            RedisError::Timeout => "timeout",
            RedisError::Connection(_) => "connection",
            RedisError::Server(_) => "server",
            RedisError::Answer(_) => "answer",
        }
    }
}

impl From<redis::RedisError> for RedisError {
    fn from(error: redis::RedisError) -> Self {
        // The library's text never holds the password; it may hold a host, which is fine.
        let text = error.to_string();
        if error.is_timeout() {
            RedisError::Timeout
        } else if error.is_io_error()
            || error.is_connection_dropped()
            || error.is_connection_refusal()
            || error.is_unrecoverable_error()
        {
            RedisError::Connection(text)
        } else {
            RedisError::Server(text)
        }
    }
}

/// A Redis (or Redis Cluster) backend: connects lazily and reconnects by itself.
///
/// Each worker thread has its own connections, made on first use on that worker's runtime,
/// so a call's I/O stays on the thread that serves the request: no cross-thread wake-ups
/// on the request path (see [`crate::workers`]).
pub struct RedisState {
    client: Client,
    /// `per_worker` slots for each worker, worker by worker.
    slots: Vec<OnceCell<Connection>>,
    per_worker: usize,
    next: AtomicUsize,
    prefix: String,
}

enum Client {
    Single {
        client: redis::Client,
        config: ConnectionManagerConfig,
    },
    Cluster(redis::cluster::ClusterClient),
}

/// One multiplexed connection (to a cluster: one per node, behind one handle).
#[derive(Clone)]
enum Connection {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl RedisState {
    /// A backend for `config`. Nothing is connected yet.
    pub fn new(config: &RedisConfig) -> Result<Self, RedisError> {
        let settings = |e: redis::RedisError| RedisError::Settings(format!("{:?}", e.kind()));
        let client = if config.cluster {
            let client = redis::cluster::ClusterClient::builder([config.url.as_str()])
                .connection_timeout(config.connect_timeout)
                .response_timeout(config.timeout)
                .retries(1)
                .build()
                .map_err(settings)?;
            Client::Cluster(client)
        } else {
            let client = redis::Client::open(config.url.as_str()).map_err(settings)?;
            let manager = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(config.connect_timeout))
                .set_response_timeout(Some(config.timeout))
                .set_number_of_retries(1)
                .set_max_delay(Duration::from_millis(500));
            Client::Single {
                client,
                config: manager,
            }
        };
        let per_worker = config.connections.max(1);
        Ok(Self {
            client,
            slots: (0..crate::workers::count() * per_worker)
                .map(|_| OnceCell::new())
                .collect(),
            per_worker,
            next: AtomicUsize::new(0),
            prefix: config.key_prefix.clone(),
        })
    }

    /// A connection of the calling worker, made on its runtime on first use.
    async fn connection(&self) -> Result<Connection, RedisError> {
        let worker = crate::workers::current() % crate::workers::count().max(1);
        let nth = if self.per_worker == 1 {
            0
        } else {
            self.next.fetch_add(1, Ordering::Relaxed) % self.per_worker
        };
        let slot = &self.slots[(worker * self.per_worker + nth) % self.slots.len()];
        slot.get_or_try_init(|| self.connect()).await.cloned()
    }

    async fn connect(&self) -> Result<Connection, RedisError> {
        Ok(match &self.client {
            Client::Single { client, config } => Connection::Single(
                ConnectionManager::new_lazy_with_config(client.clone(), config.clone())?,
            ),
            Client::Cluster(client) => Connection::Cluster(client.get_async_connection().await?),
        })
    }

    /// Checks that Redis answers and loads the scripts, on a connection of its own (scripts
    /// are per server; a cluster node loads them on first use).
    pub async fn warm_up(&self) -> Result<(), RedisError> {
        match &self.client {
            Client::Single { client, .. } => {
                let mut connection = client.get_multiplexed_async_connection().await?;
                for script in [&*INCREMENT, &*WINDOW, &*GCRA, &*COMPARE_AND_SET] {
                    script.prepare_invoke().load_async(&mut connection).await?;
                }
            }
            Client::Cluster(client) => {
                let mut connection = client.get_async_connection().await?;
                let _: String = redis::cmd("PING").query_async(&mut connection).await?;
            }
        }
        Ok(())
    }

    /// Runs one operation (without a timeout of its own: the caller bounds it).
    pub async fn run(&self, plugin: &str, op: &Op) -> Result<Outcome, RedisError> {
        let call = self.call_for(plugin, op);
        let value = match self.connection().await? {
            Connection::Single(mut manager) => call.send(&mut manager).await?,
            Connection::Cluster(mut cluster) => call.send(&mut cluster).await?,
        };
        outcome(op, value)
    }

    fn key(&self, kind: &str, plugin: &str, key: &str) -> Vec<u8> {
        let mut out =
            Vec::with_capacity(self.prefix.len() + kind.len() + plugin.len() + key.len() + 6);
        out.extend_from_slice(self.prefix.as_bytes());
        out.push(b':');
        out.extend_from_slice(kind.as_bytes());
        out.extend_from_slice(b":{");
        out.extend_from_slice(plugin.as_bytes());
        out.push(b'|');
        out.extend_from_slice(key.as_bytes());
        out.push(b'}');
        out
    }

    fn call_for<'s>(&self, plugin: &str, op: &'s Op) -> Call<'s> {
        let ms = |d: &Duration| d.as_millis().max(1) as u64;
        match op {
            Op::Increment { key, delta, window } => Call::Script {
                script: &INCREMENT,
                keys: vec![self.key("c", plugin, key)],
                args: vec![
                    delta.to_string().into_bytes(),
                    ms(window).to_string().into_bytes(),
                ],
            },
            Op::Window { key, delta, window } => Call::Script {
                script: &WINDOW,
                keys: vec![self.key("w", plugin, key)],
                args: vec![
                    delta.to_string().into_bytes(),
                    ms(window).to_string().into_bytes(),
                ],
            },
            Op::Gcra {
                key,
                limit,
                period,
                burst,
                cost,
            } => Call::Script {
                script: &GCRA,
                keys: vec![self.key("g", plugin, key)],
                args: [emission_interval_us(*limit, *period), *burst, *cost]
                    .iter()
                    .map(|n| n.to_string().into_bytes())
                    .collect(),
            },
            Op::Get { key } => Call::Command(
                redis::cmd("GET")
                    .arg(self.key("kv", plugin, key))
                    .to_owned(),
            ),
            Op::Set { key, value, ttl } => Call::Command(
                redis::cmd("SET")
                    .arg(self.key("kv", plugin, key))
                    .arg(value.as_slice())
                    .arg("PX")
                    .arg(ms(ttl))
                    .to_owned(),
            ),
            Op::CompareAndSet {
                key,
                expected,
                value,
                ttl,
            } => Call::Script {
                script: &COMPARE_AND_SET,
                keys: vec![self.key("kv", plugin, key)],
                args: vec![
                    if expected.is_some() {
                        b"1".to_vec()
                    } else {
                        b"0".to_vec()
                    },
                    expected.clone().unwrap_or_default(),
                    value.clone(),
                    ms(ttl).to_string().into_bytes(),
                ],
            },
            Op::Delete { key } => Call::Command(
                redis::cmd("DEL")
                    .arg(self.key("kv", plugin, key))
                    .to_owned(),
            ),
        }
    }
}

/// One round trip: a command, or a script by its hash.
enum Call<'s> {
    Command(Cmd),
    Script {
        script: &'s Script,
        keys: Vec<Vec<u8>>,
        args: Vec<Vec<u8>>,
    },
}

impl Call<'_> {
    async fn send(&self, connection: &mut impl ConnectionLike) -> Result<Value, RedisError> {
        Ok(match self {
            Call::Command(cmd) => cmd.query_async(connection).await?,
            Call::Script { script, keys, args } => {
                let mut invocation = script.prepare_invoke();
                for key in keys {
                    invocation.key(key.as_slice());
                }
                for arg in args {
                    invocation.arg(arg.as_slice());
                }
                invocation.invoke_async(connection).await?
            }
        })
    }
}

fn outcome(op: &Op, value: Value) -> Result<Outcome, RedisError> {
    let unexpected =
        |value: &Value| RedisError::Answer(format!("{value:?}").chars().take(120).collect());
    let number = |value: &Value| -> Result<u64, RedisError> {
        match value {
            Value::Int(n) => Ok((*n).max(0) as u64),
            other => Err(unexpected(other)),
        }
    };
    let numbers = |value: &Value, n: usize| -> Result<Vec<u64>, RedisError> {
        match value {
            Value::Array(items) if items.len() == n => items.iter().map(number).collect(),
            other => Err(unexpected(other)),
        }
    };
    Ok(match op {
        Op::Increment { .. } => Outcome::Count(number(&value)?),
        Op::Window { .. } => {
            let n = numbers(&value, 3)?;
            Outcome::Window(WindowCount {
                current: n[0],
                previous: n[1],
                elapsed_ms: n[2],
            })
        }
        Op::Gcra { .. } => {
            let n = numbers(&value, 4)?;
            Outcome::Gcra(GcraDecision {
                allowed: n[0] == 1,
                remaining: n[1],
                retry_after_ms: n[2].div_ceil(1000),
                reset_after_ms: n[3].div_ceil(1000),
            })
        }
        Op::Get { .. } => match value {
            Value::Nil => Outcome::Value(None),
            Value::BulkString(bytes) => Outcome::Value(Some(bytes)),
            other => return Err(unexpected(&other)),
        },
        Op::Set { .. } => match value {
            Value::Okay => Outcome::Done,
            Value::SimpleString(ref s) if s == "OK" => Outcome::Done,
            other => return Err(unexpected(&other)),
        },
        Op::CompareAndSet { .. } | Op::Delete { .. } => Outcome::Changed(number(&value)? > 0),
    })
}

/// `counters.increment`: the window starts at the first increment (a key without a TTL).
static INCREMENT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local value = redis.call('INCRBY', KEYS[1], ARGV[1])
if redis.call('PTTL', KEYS[1]) < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return value
",
    )
});

/// `limiter.window`: windows aligned to Redis' clock. One hash per key holds the current
/// window's index (`i`) and count (`c`) and the previous window's count (`p`), so the script
/// touches only the key it declares. Returns {current, previous, elapsed ms}.
static WINDOW: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local length = tonumber(ARGV[2])
local delta = tonumber(ARGV[1])
local index = math.floor(now / length)
local state = redis.call('HMGET', KEYS[1], 'i', 'c', 'p')
local stored = tonumber(state[1])
local current, previous
if stored == index then
  current = tonumber(state[2]) + delta
  previous = tonumber(state[3])
elseif stored == index - 1 then
  current = delta
  previous = tonumber(state[2])
else
  current = delta
  previous = 0
end
redis.call('HSET', KEYS[1], 'i', string.format('%d', index), 'c', string.format('%d', current), 'p', string.format('%d', previous))
redis.call('PEXPIRE', KEYS[1], length * 2)
return {current, previous, now - index * length}
",
    )
});

/// `limiter.gcra`, in microseconds of Redis' clock; returns
/// {allowed, remaining, retry-after µs, reset-after µs}.
static GCRA: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + interval * cost
local allow_at = new_tat - interval * burst
if now < allow_at then
  return {0, 0, allow_at - now, tat - now}
end
if new_tat > now then
  redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1)
end
return {1, math.floor((now + interval * burst - new_tat) / interval), 0, new_tat - now}
",
    )
});

/// `kv.compare-and-set`: ARGV = {has expected, expected, value, ttl ms}; returns 1 if set.
static COMPARE_AND_SET: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local current = redis.call('GET', KEYS[1])
if ARGV[1] == '1' then
  if current ~= ARGV[2] then return 0 end
elseif current then
  return 0
end
redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[4])
return 1
",
    )
});
