//! The engine: the lifecycle side of sai. It turns API intents (invoke, stop, configure) into
//! store mutations with the right data and time, and owns what happens to an invocation after
//! it is accepted.

use std::sync::Arc;

use crate::clock::now_ms;
use crate::model::{AsyncInvokeConfig, Change, Invocation, InvocationKey, StoredConfig};
use crate::store::{ConfigKey, Store, StoreError};

/// Drives invocations through their lifecycle on top of the store.
pub struct Engine {
    store: Arc<Store>,
}

/// A validated InvokeFunction.
#[derive(Debug, Clone)]
pub struct NewInvocation {
    /// Its key (with the id chosen or generated).
    pub key: InvocationKey,
    /// Qualifier ("LATEST" by default).
    pub qualifier: Arc<str>,
    /// Payload.
    pub payload: Arc<str>,
    /// The request id of the call.
    pub request_id: String,
}

impl Engine {
    /// An engine over `store`.
    pub fn new(store: Arc<Store>) -> Arc<Self> {
        Arc::new(Engine { store })
    }

    /// The store it drives (reads go to it directly).
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Accept an invocation: stored as Enqueued with event 1.
    pub async fn invoke(&self, new: NewInvocation) -> Result<Arc<Invocation>, StoreError> {
        let invocation = Invocation::accept(
            new.key,
            &new.qualifier,
            new.payload,
            &new.request_id,
            now_ms(),
        );
        self.store.insert(invocation).await
    }

    /// Stop an invocation: queued ones stop at once, held ones go to Stopping.
    pub async fn stop(&self, key: InvocationKey) -> Result<Arc<Invocation>, StoreError> {
        let (invocation, _changed) = self.store.apply(key, Change::Stop, now_ms()).await?;
        Ok(invocation)
    }

    /// Create or replace a config.
    pub async fn put_config(
        &self,
        key: ConfigKey,
        config: AsyncInvokeConfig,
    ) -> Result<StoredConfig, StoreError> {
        self.store.put_config(key, config, now_ms()).await
    }

    /// Remove a config.
    pub async fn delete_config(&self, key: ConfigKey) -> Result<StoredConfig, StoreError> {
        self.store.delete_config(key).await
    }
}
