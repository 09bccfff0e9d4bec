//! Wake-ups across replicas: a committing transaction sends one notification saying which
//! functions gained ready work, whether its account feeds moved, and whether it set a
//! deadline; every replica listens on one connection of its own and wakes its pollers, its
//! feed and its deadline scan. A notification is only a hint: pollers look again every
//! second, and a listener that reconnects wakes everything once, so a lost one costs
//! latency, never work.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio_postgres::{AsyncMessage, NoTls};

use crate::model::FunctionKey;

use super::super::backend::{PollTarget, WorkWaiter};
use super::Inner;

/// The channel every replica listens on.
pub const CHANNEL: &str = "sai";
/// Largest payload sent; PostgreSQL refuses 8000 bytes and more.
pub const MAX_NOTE_BYTES: usize = 7_000;
/// How often a waiting poller looks again without a wake-up.
const POLL_BACKSTOP: Duration = Duration::from_secs(1);
/// How long the listener waits before connecting again.
const RECONNECT_AFTER: Duration = Duration::from_secs(1);

/// What one committed transaction tells the other replicas.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Note {
    /// Functions that gained ready work.
    #[serde(rename = "r", default, skip_serializing_if = "Vec::is_empty")]
    pub ready: Vec<FunctionKey>,
    /// Some account's feed moved.
    #[serde(rename = "f", default, skip_serializing_if = "std::ops::Not::not")]
    pub feed: bool,
    /// A deadline was set.
    #[serde(rename = "d", default, skip_serializing_if = "std::ops::Not::not")]
    pub due: bool,
    /// Look at everything (the note would have been too long, or some were lost).
    #[serde(rename = "a", default, skip_serializing_if = "std::ops::Not::not")]
    pub everything: bool,
}

impl Note {
    /// A note that wakes everything.
    pub fn everything() -> Self {
        Note {
            everything: true,
            ..Note::default()
        }
    }

    /// The payload.
    pub fn encode(&self) -> String {
        serde_json::to_string(self).expect("a note is plain data and always serializes")
    }
}

/// The pollers of this replica waiting for work, by function.
#[derive(Default)]
pub struct WorkSignals {
    waiting: Mutex<HashMap<FunctionKey, watch::Sender<u64>>>,
}

impl WorkSignals {
    /// Wake the pollers waiting on `function`.
    pub fn wake(&self, function: &FunctionKey) {
        if let Some(sender) = self.waiting.lock().get(function) {
            sender.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    /// Wake every waiting poller.
    pub fn wake_all(&self) {
        for sender in self.waiting.lock().values() {
            sender.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    /// A waiter on `targets`' functions.
    pub fn wait_on(self: &Arc<Self>, targets: &[PollTarget]) -> Waiter {
        let mut waiting = self.waiting.lock();
        let receivers = targets
            .iter()
            .map(|target| {
                waiting
                    .entry(target.function.clone())
                    .or_insert_with(|| watch::Sender::new(0))
                    .subscribe()
            })
            .collect();
        Waiter {
            receivers: tokio::sync::Mutex::new(receivers),
            signals: self.clone(),
        }
    }
}

/// One poller's wait; its functions are forgotten once nobody waits on them.
pub struct Waiter {
    receivers: tokio::sync::Mutex<Vec<watch::Receiver<u64>>>,
    signals: Arc<WorkSignals>,
}

#[async_trait]
impl WorkWaiter for Waiter {
    async fn woken(&self) {
        let mut receivers = self.receivers.lock().await;
        if receivers.is_empty() {
            tokio::time::sleep(POLL_BACKSTOP).await;
            return;
        }
        let changed = futures_util::future::select_all(
            receivers
                .iter_mut()
                .map(|receiver| Box::pin(receiver.changed())),
        );
        tokio::select! {
            _ = changed => {}
            _ = tokio::time::sleep(POLL_BACKSTOP) => {}
        }
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        self.receivers.get_mut().clear();
        self.signals
            .waiting
            .lock()
            .retain(|_, sender| sender.receiver_count() > 0);
    }
}

/// Listen for other replicas' notes until shutdown, connecting again whenever the
/// connection is lost.
pub async fn listen(config: tokio_postgres::Config, inner: Arc<Inner>) {
    loop {
        let listened = tokio::select! {
            listened = listen_once(&config, &inner) => listened,
            _ = inner.shutdown.cancelled() => return,
        };
        if let Err(err) = listened {
            tracing::warn!(%err, "the notification listener lost PostgreSQL; connecting again");
        }
        tokio::select! {
            _ = tokio::time::sleep(RECONNECT_AFTER) => {}
            _ = inner.shutdown.cancelled() => return,
        }
    }
}

async fn listen_once(
    config: &tokio_postgres::Config,
    inner: &Inner,
) -> Result<(), tokio_postgres::Error> {
    let (client, mut connection) = config.connect(NoTls).await?;
    let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
    let statement = format!("LISTEN {CHANNEL}");
    let listening = client.batch_execute(&statement);
    tokio::pin!(listening);
    // The connection is driven by reading its messages, while LISTEN runs.
    loop {
        tokio::select! {
            done = &mut listening => { done?; break; }
            message = messages.next() => match message {
                Some(Ok(_)) => {}
                Some(Err(err)) => return Err(err),
                None => return Ok(()),
            },
        }
    }
    // Whatever was sent while no one listened is looked at once.
    inner.notified(&Note::everything());
    while let Some(message) = messages.next().await {
        match message? {
            AsyncMessage::Notification(note) => {
                match serde_json::from_str::<Note>(note.payload()) {
                    Ok(note) => inner.notified(&note),
                    Err(err) => {
                        tracing::debug!(%err, "an unreadable notification; looking at everything");
                        inner.notified(&Note::everything());
                    }
                }
            }
            AsyncMessage::Notice(notice) => tracing::debug!(%notice, "PostgreSQL notice"),
            _ => {}
        }
    }
    Ok(())
}
