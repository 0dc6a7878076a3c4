//! `wasmgate-demo`: small demo upstream services on loopback, for trying the
//! gateway (`users`, `orders`, `inventory`, and `greeter`, a gRPC service) and for
//! benchmarking it (`fast`).
//!
//! With no flags, `users`, `orders`, `inventory` and `greeter` start on their default
//! addresses. With any service flag, only the services named start, e.g.
//! `wasmgate-demo --fast 127.0.0.1:9200` runs just the benchmark upstream.

mod greeter;
mod services;
mod websocket;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use services::Service;

/// How long in-flight requests get to finish after Ctrl-C / SIGTERM.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Demo upstream services for wasmgate.
///
/// With no flags, starts users on 127.0.0.1:9101, orders on 127.0.0.1:9102,
/// inventory on 127.0.0.1:9103 and the gRPC greeter (h2c) on 127.0.0.1:9104. With any
/// flag, starts only the services given.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// Start the users service on ADDR (default 127.0.0.1:9101).
    #[arg(long, value_name = "ADDR")]
    users: Option<SocketAddr>,
    /// Start the orders service on ADDR (default 127.0.0.1:9102).
    #[arg(long, value_name = "ADDR")]
    orders: Option<SocketAddr>,
    /// Start the inventory service on ADDR (default 127.0.0.1:9103).
    #[arg(long, value_name = "ADDR")]
    inventory: Option<SocketAddr>,
    /// Start the gRPC greeter (HTTP/2 without TLS) on ADDR (default 127.0.0.1:9104).
    #[arg(long, value_name = "ADDR")]
    greeter: Option<SocketAddr>,
    /// Start the fast benchmark upstream on ADDR (off unless given).
    #[arg(long, value_name = "ADDR")]
    fast: Option<SocketAddr>,
}

impl Cli {
    /// The services to start, with their addresses.
    fn services(&self) -> Vec<(Service, SocketAddr)> {
        let given = [
            (Service::Users, self.users),
            (Service::Orders, self.orders),
            (Service::Inventory, self.inventory),
            (Service::Greeter, self.greeter),
            (Service::Fast, self.fast),
        ];
        if given.iter().any(|(_, addr)| addr.is_some()) {
            given
                .into_iter()
                .filter_map(|(service, addr)| Some((service, addr?)))
                .collect()
        } else {
            vec![
                (Service::Users, SocketAddr::from(([127, 0, 0, 1], 9101))),
                (Service::Orders, SocketAddr::from(([127, 0, 0, 1], 9102))),
                (Service::Inventory, SocketAddr::from(([127, 0, 0, 1], 9103))),
                (Service::Greeter, SocketAddr::from(([127, 0, 0, 1], 9104))),
            ]
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut signals = match ShutdownSignals::register() {
        Ok(signals) => signals,
        Err(e) => {
            eprintln!("wasmgate-demo: cannot watch for Ctrl-C / SIGTERM: {e}");
            return ExitCode::FAILURE;
        }
    };

    // Bind everything first, so a busy port fails the whole command up front.
    let mut listeners = Vec::new();
    for (service, addr) in cli.services() {
        match TcpListener::bind(addr).await {
            Ok(listener) => listeners.push((service, listener)),
            Err(e) => {
                eprintln!(
                    "wasmgate-demo: cannot listen for {} on {addr}: {e}",
                    service.name()
                );
                return ExitCode::FAILURE;
            }
        }
    }

    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    for (service, listener) in listeners {
        match listener.local_addr() {
            Ok(addr) => println!("{} listening on http://{addr}", service.name()),
            Err(e) => {
                eprintln!("wasmgate-demo: {}: {e}", service.name());
                return ExitCode::FAILURE;
            }
        }
        tasks.spawn(serve(service, listener, stop_rx.clone()));
    }

    signals.recv().await;
    eprintln!("wasmgate-demo: shutting down");
    let _ = stop_tx.send(true);
    while tasks.join_next().await.is_some() {}
    ExitCode::SUCCESS
}

/// Accepts HTTP/1.1 connections (HTTP/2 for the greeter) for `service` until `stop` flips,
/// then drains them (connections that switched protocols, such as `/ws`, are not waited for).
async fn serve(service: Service, listener: TcpListener, mut stop: watch::Receiver<bool>) {
    let mut http = http1::Builder::new();
    http.keep_alive(true);
    let http2 = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    let mut connections = JoinSet::new();

    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) if service == Service::Greeter => {
                    let _ = stream.set_nodelay(true);
                    let conn = http2.serve_connection(TokioIo::new(stream), service_fn(greeter::handle));
                    connections.spawn(until_stopped(conn, stop.clone(), |conn| conn.graceful_shutdown()));
                }
                Ok((stream, _peer)) => {
                    let _ = stream.set_nodelay(true);
                    let svc = service_fn(move |req| services::handle(service, req));
                    let conn = http.serve_connection(TokioIo::new(stream), svc).with_upgrades();
                    connections.spawn(until_stopped(conn, stop.clone(), |conn| conn.graceful_shutdown()));
                }
                Err(e) => {
                    // Typically EMFILE; back off briefly instead of spinning.
                    if service != Service::Fast {
                        eprintln!("{}: accept failed: {e}", service.name());
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            _ = stop.changed() => break,
        }
    }

    drop(listener);
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
}

/// Drives a connection until it ends, or until `stop` flips: then asks it to finish (with
/// `shutdown`) and drives it to its end. Connection errors (client resets, half-sent requests)
/// are the client's business.
async fn until_stopped<C: std::future::Future>(
    conn: C,
    mut stop: watch::Receiver<bool>,
    shutdown: fn(std::pin::Pin<&mut C>),
) {
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => return,
        _ = stop.changed() => shutdown(conn.as_mut()),
    }
    let _ = conn.await;
}

/// Ctrl-C and SIGTERM, registered up front so that a signal arriving right
/// after the "listening" lines is never lost.
struct ShutdownSignals {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

impl ShutdownSignals {
    fn register() -> std::io::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Self {
                interrupt: signal(SignalKind::interrupt())?,
                terminate: signal(SignalKind::terminate())?,
            })
        }
        #[cfg(not(unix))]
        Ok(Self {})
    }

    /// Resolves on the first Ctrl-C or SIGTERM.
    async fn recv(&mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    }
}
