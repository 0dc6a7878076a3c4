//! Request coalescing: concurrent misses for one key make one upstream request.
//!
//! The first miss leads: it goes to the upstream and publishes what comes back into its
//! [`Flight`]. Misses that arrive meanwhile follow: they wait (at most the route's
//! `coalesce-wait`) for the response head, then stream the body as it arrives from the
//! leader (the chunks already received first), instead of waiting for the whole response.
//! A response that cannot be stored is not shared: followers go to the upstream themselves.
//! A leader that ends without a complete response (upstream error, client gone) fails its
//! flight: followers still waiting for a head go to the upstream; those streaming get a
//! body error.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::header::HeaderMap;
use http::{HeaderName, StatusCode};
use tokio::sync::mpsc;

use crate::body::BoxError;

/// What a follower hears from its flight.
#[derive(Debug)]
pub enum Event {
    /// The response head, and the `Vary` fields with the leader's values for them.
    Head(Arc<SharedHead>),
    /// A body chunk.
    Data(Bytes),
    /// The body ended cleanly.
    End,
    /// The response is not shared (not storable): go to the upstream.
    Pass,
    /// The leader failed.
    Failed,
}

/// The head of the response a flight shares.
#[derive(Debug)]
pub struct SharedHead {
    /// Status.
    pub status: StatusCode,
    /// Header fields.
    pub headers: HeaderMap,
    /// The fields the response varies on.
    pub vary: Vec<HeaderName>,
    /// The leader's values for them (see [`super::key::vary_values`]).
    pub vary_values: String,
}

#[derive(Default)]
struct FlightState {
    head: Option<Arc<SharedHead>>,
    chunks: Vec<Bytes>,
    followers: Vec<mpsc::UnboundedSender<Event>>,
    /// Set once the flight has ended; late joiners then start their own.
    closed: bool,
}

/// One upstream request that followers share.
#[derive(Default)]
pub struct Flight {
    state: Mutex<FlightState>,
}

/// The flights of one route, by key.
#[derive(Default)]
pub struct Flights {
    map: Mutex<HashMap<Arc<str>, Arc<Flight>>>,
}

/// What a miss becomes.
pub enum Role {
    /// It goes to the upstream and shares the response.
    Leader(Lead),
    /// It follows the flight already under way: events arrive on this channel.
    Follower(mpsc::UnboundedReceiver<Event>),
}

impl Flights {
    /// Joins the flight for `key`, or starts one.
    pub fn join(self: &Arc<Self>, key: &Arc<str>) -> Role {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(flight) = map.get(key) {
            let mut state = flight.state.lock().unwrap_or_else(|p| p.into_inner());
            if !state.closed {
                let (sender, receiver) = mpsc::unbounded_channel();
                if let Some(head) = &state.head {
                    let _ = sender.send(Event::Head(head.clone()));
                    for chunk in &state.chunks {
                        let _ = sender.send(Event::Data(chunk.clone()));
                    }
                }
                state.followers.push(sender);
                return Role::Follower(receiver);
            }
        }
        let flight = Arc::new(Flight::default());
        map.insert(key.clone(), flight.clone());
        Role::Leader(Lead {
            flights: self.clone(),
            key: key.clone(),
            flight,
            done: false,
        })
    }

    /// Flights under way.
    pub fn len(&self) -> usize {
        self.map.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Requests following flights now (waiting for a head or streaming a body).
    pub fn followers(&self) -> usize {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.values()
            .map(|flight| {
                let state = flight.state.lock().unwrap_or_else(|p| p.into_inner());
                state.followers.iter().filter(|f| !f.is_closed()).count()
            })
            .sum()
    }

    /// Whether no flight is under way.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The leader's side of a flight. Dropped before [`Lead::finish`] or [`Lead::pass`], it
/// fails the flight.
pub struct Lead {
    flights: Arc<Flights>,
    key: Arc<str>,
    flight: Arc<Flight>,
    done: bool,
}

impl Lead {
    fn broadcast(&self, state: &mut FlightState, event: impl Fn() -> Event) {
        state.followers.retain(|f| f.send(event()).is_ok());
    }

    /// Shares the response head; chunks follow with [`Lead::data`].
    pub fn head(&self, head: SharedHead) {
        let head = Arc::new(head);
        let mut state = self.flight.state.lock().unwrap_or_else(|p| p.into_inner());
        state.head = Some(head.clone());
        self.broadcast(&mut state, || Event::Head(head.clone()));
    }

    /// Shares a body chunk.
    pub fn data(&self, chunk: &Bytes) {
        let mut state = self.flight.state.lock().unwrap_or_else(|p| p.into_inner());
        state.chunks.push(chunk.clone());
        self.broadcast(&mut state, || Event::Data(chunk.clone()));
    }

    /// The body ended cleanly: followers end theirs. Call after the response is stored,
    /// so that requests arriving from now on find it.
    pub fn finish(mut self) {
        self.close(Event::End);
    }

    /// The response is not shared: followers go to the upstream.
    pub fn pass(mut self) {
        self.close(Event::Pass);
    }

    fn close(&mut self, last: Event) {
        self.done = true;
        {
            let mut map = self.flights.map.lock().unwrap_or_else(|p| p.into_inner());
            if map
                .get(&self.key)
                .is_some_and(|f| Arc::ptr_eq(f, &self.flight))
            {
                map.remove(&self.key);
            }
        }
        let mut state = self.flight.state.lock().unwrap_or_else(|p| p.into_inner());
        state.closed = true;
        state.chunks = Vec::new();
        let followers = std::mem::take(&mut state.followers);
        let last: fn() -> Event = match last {
            Event::End => || Event::End,
            Event::Pass => || Event::Pass,
            _ => || Event::Failed,
        };
        for follower in followers {
            let _ = follower.send(last());
        }
    }
}

impl Drop for Lead {
    fn drop(&mut self) {
        if !self.done {
            self.close(Event::Failed);
        }
    }
}

/// A follower's body: the leader's chunks as they arrive.
pub struct FollowerBody {
    events: mpsc::UnboundedReceiver<Event>,
    ended: bool,
}

impl FollowerBody {
    /// The body of a follower that has received the head.
    pub fn new(events: mpsc::UnboundedReceiver<Event>) -> Self {
        Self {
            events,
            ended: false,
        }
    }
}

/// The leader's body failed before its end.
#[derive(Debug, thiserror::Error)]
#[error("the coalesced upstream response failed before its end")]
pub struct FlightFailed;

impl http_body::Body for FollowerBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        if self.ended {
            return std::task::Poll::Ready(None);
        }
        loop {
            return match std::task::ready!(self.events.poll_recv(cx)) {
                Some(Event::Data(chunk)) => {
                    std::task::Poll::Ready(Some(Ok(http_body::Frame::data(chunk))))
                }
                Some(Event::Head(_)) => continue,
                Some(Event::End) => {
                    self.ended = true;
                    std::task::Poll::Ready(None)
                }
                Some(Event::Pass | Event::Failed) | None => {
                    self.ended = true;
                    std::task::Poll::Ready(Some(Err(Box::new(FlightFailed))))
                }
            };
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended
    }
}
