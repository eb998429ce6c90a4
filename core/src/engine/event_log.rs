//! The engine's recent events, numbered, for a front end that has to ask for them instead
//! of being called: the iOS app, whose only channel to its tunnel extension is request →
//! reply (`sendProviderMessage`). It asks `Events { after, wait_ms }` and the reply is held
//! until there is something after its cursor (a long poll), so the app hears of changes at
//! once without polling on a timer, and an idle engine does no extra work.

use crate::api::{Event, Response};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::{broadcast, Notify};

/// Events kept for a front end that was away (the app in the background does not poll).
/// Older ones are summed up as one `Missed`: the app then asks for the state again.
pub const EVENT_LOG_CAPACITY: usize = 128;

/// At most this many events per reply (a provider message is meant to be small).
pub const EVENTS_PER_REPLY: usize = 64;

/// The longest a reply is held: the app's message has no timeout of its own, and a reply
/// held for ever would hide a stopped extension.
pub const MAX_EVENTS_WAIT: Duration = Duration::from_secs(30);

/// The numbered events (sans-IO: `push` and `since`, no clock, no waiting). Numbers start
/// at a base chosen per engine run, so a cursor an app kept from an earlier run (the
/// extension restarted) is recognised as foreign instead of skipping this run's events.
#[derive(Debug)]
pub struct NumberedEvents {
    kept: VecDeque<Event>,
    /// Events are numbered from `base + 1`.
    base: u64,
    /// The number of the newest event (`base`: none yet).
    last: u64,
}

impl NumberedEvents {
    pub fn new(base: u64) -> NumberedEvents {
        NumberedEvents {
            kept: VecDeque::with_capacity(EVENT_LOG_CAPACITY),
            base,
            last: base,
        }
    }

    pub fn push(&mut self, event: Event) {
        if self.kept.len() == EVENT_LOG_CAPACITY {
            self.kept.pop_front();
        }
        self.kept.push_back(event);
        self.last += 1;
    }

    /// The events after the cursor `after` (at most [`EVENTS_PER_REPLY`]) and the cursor
    /// for the next call. A cursor not from this run (0 for a first call) gets everything
    /// since the start. Events no longer kept come first, as one `Missed`.
    pub fn since(&self, after: u64) -> (Vec<Event>, u64) {
        let after = if (self.base..=self.last).contains(&after) {
            after
        } else {
            self.base
        };
        let oldest = self.last + 1 - self.kept.len() as u64;
        let mut events = Vec::new();
        let first = if after + 1 < oldest {
            events.push(Event::Missed {
                count: oldest - after - 1,
            });
            oldest
        } else {
            after + 1
        };
        let missed = events.len();
        let skip = usize::try_from(first - oldest).unwrap_or(usize::MAX);
        let room = EVENTS_PER_REPLY - missed;
        events.extend(self.kept.iter().skip(skip).take(room).cloned());
        let next = first - 1 + (events.len() - missed) as u64;
        (events, next)
    }
}

/// [`NumberedEvents`] shared between the engine's recorder and the front ends that wait.
#[derive(Debug)]
pub struct EventLog {
    events: Mutex<NumberedEvents>,
    changed: Notify,
}

impl EventLog {
    /// Starts recording everything sent on `events` from now on (a task of the current
    /// runtime, ending with the engine: it wakes only when an event is sent).
    pub(crate) fn record(receiver: broadcast::Receiver<Event>) -> Arc<EventLog> {
        // A random base below 2^48: exact in every JSON reader (JavaScript's too).
        let base = u64::from(rand::random::<u32>()) << 16;
        let log = Arc::new(EventLog {
            events: Mutex::new(NumberedEvents::new(base)),
            changed: Notify::new(),
        });
        tokio::spawn(Arc::clone(&log).run(receiver));
        log
    }

    async fn run(self: Arc<Self>, mut receiver: broadcast::Receiver<Event>) {
        loop {
            let event = match receiver.recv().await {
                Ok(event) => event,
                Err(broadcast::error::RecvError::Lagged(count)) => Event::Missed { count },
                Err(broadcast::error::RecvError::Closed) => return,
            };
            self.push(event);
        }
    }

    fn push(&self, event: Event) {
        self.lock().push(event);
        self.changed.notify_waiters();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, NumberedEvents> {
        self.events.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The reply to `Events { after, wait_ms }`: what came after the cursor, waiting up to
    /// `wait` (capped at [`MAX_EVENTS_WAIT`]) for something to come when nothing has.
    pub async fn answer(&self, after: u64, wait: Duration) -> Response {
        let deadline = tokio::time::Instant::now() + wait.min(MAX_EVENTS_WAIT);
        loop {
            // Registered before looking, so an event pushed in between still wakes us.
            let changed = self.changed.notified();
            let (events, next) = self.lock().since(after);
            if !events.is_empty() {
                return Response::Events { events, next };
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return Response::Events { events, next };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(n: u64) -> Event {
        Event::FriendRequest {
            jid: format!("f{n}@example.org"),
        }
    }

    const BASE: u64 = 1000;

    fn log_of(n: u64) -> NumberedEvents {
        let mut log = NumberedEvents::new(BASE);
        for i in 1..=n {
            log.push(request(i));
        }
        log
    }

    #[test]
    fn a_cursor_walks_the_events_in_order_without_repeats() {
        let log = log_of(3);
        let all = vec![request(1), request(2), request(3)];
        assert_eq!(log.since(0), (all, BASE + 3));
        assert_eq!(log.since(BASE + 2), (vec![request(3)], BASE + 3));
        assert_eq!(log.since(BASE + 3), (vec![], BASE + 3));
        assert_eq!(NumberedEvents::new(BASE).since(0), (vec![], BASE));
    }

    #[test]
    fn events_no_longer_kept_arrive_as_one_missed() {
        let total = EVENT_LOG_CAPACITY as u64 + 10;
        let log = log_of(total);
        let (events, next) = log.since(BASE + 4);
        // 5..=10 are gone: 6 missed, then the oldest kept ones, a reply's worth.
        assert_eq!(events[0], Event::Missed { count: 6 });
        assert_eq!(events[1], request(11));
        assert_eq!(events.len(), EVENTS_PER_REPLY);
        assert_eq!(next, BASE + 10 + EVENTS_PER_REPLY as u64 - 1);
        // Walking on reaches the newest, each event once.
        let mut cursor = next;
        let mut seen = events.len() - 1;
        loop {
            let (events, next) = log.since(cursor);
            if events.is_empty() {
                break;
            }
            assert!(events.iter().all(|e| !matches!(e, Event::Missed { .. })));
            seen += events.len();
            cursor = next;
        }
        assert_eq!(cursor, BASE + total);
        assert_eq!(seen as u64, total - 10);
        // A first call (cursor 0) hears that the oldest were dropped too.
        assert_eq!(log.since(0).0[0], Event::Missed { count: 10 });
    }

    #[test]
    fn a_cursor_from_an_earlier_run_gets_everything_of_this_run() {
        let log = log_of(2);
        let both = (vec![request(1), request(2)], BASE + 2);
        assert_eq!(log.since(57), both);
        assert_eq!(log.since(BASE + 3), both);
    }

    #[test]
    fn a_long_reply_is_cut_and_resumed() {
        let log = log_of(EVENTS_PER_REPLY as u64 + 5);
        let (first, next) = log.since(0);
        assert_eq!(first.len(), EVENTS_PER_REPLY);
        assert_eq!(next, BASE + EVENTS_PER_REPLY as u64);
        let (rest, next) = log.since(next);
        assert_eq!(rest.len(), 5);
        assert_eq!(next, BASE + EVENTS_PER_REPLY as u64 + 5);
    }

    #[tokio::test]
    async fn a_waiting_reply_returns_when_an_event_comes_or_the_wait_ends() {
        let (sender, receiver) = broadcast::channel(8);
        let log = EventLog::record(receiver);
        // Nothing yet: the reply comes, empty, when the wait is over.
        let started = tokio::time::Instant::now();
        let reply = log.answer(0, Duration::from_millis(50)).await;
        let Response::Events { events, next } = reply else {
            panic!("{reply:?}")
        };
        assert!(events.is_empty());
        assert!(started.elapsed() >= Duration::from_millis(50));
        // A waiting reply is woken by the next event (else it would come back empty).
        let waiting = tokio::spawn({
            let log = Arc::clone(&log);
            async move { log.answer(next, Duration::from_secs(20)).await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        sender.send(Event::RosterChanged).unwrap();
        assert_eq!(
            waiting.await.unwrap(),
            Response::Events {
                events: vec![Event::RosterChanged],
                next: next + 1
            }
        );
        // Up to date, after the engine's end: the wait's end answers.
        drop(sender);
        let reply = log.answer(next + 1, Duration::from_millis(20)).await;
        assert_eq!(
            reply,
            Response::Events {
                events: vec![],
                next: next + 1
            }
        );
    }
}
