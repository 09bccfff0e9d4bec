//! The catalog: async invoke configs and the functions known to each account.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;
use std::sync::Arc;

use crate::model::{AsyncInvokeConfig, FunctionKey, StoredConfig};

use super::error::StoreError;
use super::index::SCAN_BUDGET;
use super::page::{self, PageSigner};

/// A config's identity: one qualifier of one function.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConfigKey {
    /// The function.
    pub function: FunctionKey,
    /// The qualifier ("LATEST" by default).
    pub qualifier: Arc<str>,
}

/// A (service, function, qualifier) with stateful invocation enabled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionMeta {
    /// Service.
    pub service: Arc<str>,
    /// Function.
    pub function: Arc<str>,
    /// Qualifier.
    pub qualifier: Arc<str>,
}

/// One page of a function's configs.
#[derive(Debug, Clone)]
pub struct ConfigPage {
    /// (qualifier, config), ordered by qualifier.
    pub configs: Vec<(Arc<str>, StoredConfig)>,
    /// Token for the next page; "" when done.
    pub next_token: String,
}

/// One page of an account's functions.
#[derive(Debug, Clone)]
pub struct FunctionPage {
    /// Functions ordered by (service, function, qualifier).
    pub functions: Vec<FunctionMeta>,
    /// Token for the next page; "" when done.
    pub next_token: String,
}

/// Configs and known functions, ordered for listing.
#[derive(Debug, Default)]
pub struct Catalog {
    configs: BTreeMap<ConfigKey, StoredConfig>,
    /// Every (function, qualifier) that was invoked or configured.
    functions: BTreeSet<ConfigKey>,
}

impl Catalog {
    /// Whether `key` is known as a function.
    pub fn knows(&self, key: &ConfigKey) -> bool {
        self.functions.contains(key)
    }

    /// Every function known, once each (whatever its qualifiers).
    pub fn function_keys(&self) -> Vec<FunctionKey> {
        let mut keys: Vec<FunctionKey> =
            self.functions.iter().map(|k| k.function.clone()).collect();
        keys.dedup();
        keys
    }

    /// Record that `key` was invoked or configured.
    pub fn register(&mut self, key: ConfigKey) {
        self.functions.insert(key);
    }

    /// The config of `key`, if any.
    pub fn config(&self, key: &ConfigKey) -> Option<&StoredConfig> {
        self.configs.get(key)
    }

    /// Create or replace a config at `now_ms`, keeping its creation time.
    pub fn put(&mut self, key: ConfigKey, config: AsyncInvokeConfig, now_ms: i64) -> StoredConfig {
        let created_time_ms = self
            .configs
            .get(&key)
            .map_or(now_ms, |old| old.created_time_ms);
        let stored = StoredConfig {
            config,
            created_time_ms,
            last_modified_time_ms: now_ms,
        };
        self.functions.insert(key.clone());
        self.configs.insert(key, stored.clone());
        stored
    }

    /// Put back a config loaded from disk, as it was stored.
    pub fn restore(&mut self, key: ConfigKey, config: StoredConfig) {
        self.functions.insert(key.clone());
        self.configs.insert(key, config);
    }

    /// Remove a config.
    pub fn delete(&mut self, key: &ConfigKey) -> Result<StoredConfig, StoreError> {
        self.configs
            .remove(key)
            .ok_or_else(|| StoreError::ConfigNotFound {
                service: key.function.service.to_string(),
                function: key.function.function.to_string(),
                qualifier: key.qualifier.to_string(),
            })
    }

    /// A page of `function`'s configs ordered by qualifier.
    pub fn list_configs(
        &self,
        signer: &PageSigner,
        function: &FunctionKey,
        limit: usize,
        next_token: &str,
    ) -> Result<ConfigPage, StoreError> {
        let scope: [&str; 3] = [&function.account, &function.service, &function.function];
        let low = if next_token.is_empty() {
            Bound::Included(ConfigKey {
                function: function.clone(),
                qualifier: "".into(),
            })
        } else {
            let parts = signer.decode("next_token", next_token, page::KIND_CONFIGS, &scope, 1)?;
            Bound::Excluded(ConfigKey {
                function: function.clone(),
                qualifier: parts[0].as_str().into(),
            })
        };
        let mut items: Vec<(Arc<str>, StoredConfig)> = Vec::new();
        let mut next = String::new();
        for (key, config) in self.configs.range((low, Bound::Unbounded)) {
            if &key.function != function {
                break;
            }
            if let (true, Some((last, _))) = (items.len() == limit, items.last()) {
                next = signer.encode(page::KIND_CONFIGS, &scope, &[&**last]);
                break;
            }
            items.push((key.qualifier.clone(), config.clone()));
        }
        Ok(ConfigPage {
            configs: items,
            next_token: next,
        })
    }

    /// A page of `account`'s functions with stateful invocation enabled, ordered by
    /// (service, function, qualifier). Examines at most [`SCAN_BUDGET`] functions.
    pub fn list_functions(
        &self,
        signer: &PageSigner,
        account: &Arc<str>,
        limit: usize,
        next_token: &str,
    ) -> Result<FunctionPage, StoreError> {
        let scope: [&str; 1] = [account];
        let low = if next_token.is_empty() {
            Bound::Included(ConfigKey {
                function: FunctionKey {
                    account: account.clone(),
                    service: "".into(),
                    function: "".into(),
                },
                qualifier: "".into(),
            })
        } else {
            let parts = signer.decode("next_token", next_token, page::KIND_FUNCTIONS, &scope, 3)?;
            Bound::Excluded(ConfigKey {
                function: FunctionKey {
                    account: account.clone(),
                    service: parts[0].as_str().into(),
                    function: parts[1].as_str().into(),
                },
                qualifier: parts[2].as_str().into(),
            })
        };
        let mut items = Vec::new();
        let mut next = String::new();
        let mut last: Option<&ConfigKey> = None;
        for (examined, key) in self.functions.range((low, Bound::Unbounded)).enumerate() {
            if &key.function.account != account {
                break;
            }
            if items.len() == limit || examined == SCAN_BUDGET {
                if let Some(last) = last {
                    next = signer.encode(
                        page::KIND_FUNCTIONS,
                        &scope,
                        &[
                            &last.function.service,
                            &last.function.function,
                            &last.qualifier,
                        ],
                    );
                }
                break;
            }
            last = Some(key);
            let stateful = self.configs.get(key).is_none_or(|c| c.config.is_stateful());
            if stateful {
                items.push(FunctionMeta {
                    service: key.function.service.clone(),
                    function: key.function.function.clone(),
                    qualifier: key.qualifier.clone(),
                });
            }
        }
        Ok(FunctionPage {
            functions: items,
            next_token: next,
        })
    }
}
