//! Per-function ordered index of invocations by (started_time, id), and the bounded list scan
//! over it.
//!
//! A page seeks to its cursor in O(log n), then examines at most [`SCAN_BUDGET`] entries. A
//! filter that matches rarely therefore returns a short (even empty) page with a token to go
//! on, rather than scanning the whole function: every page's cost is bounded whatever is stored.

use std::collections::BTreeSet;
use std::ops::Bound;
use std::sync::Arc;

use crate::model::{FunctionKey, Invocation, Status};

use super::error::StoreError;
use super::page::{self, PageSigner};

/// Most index entries one page examines.
pub const SCAN_BUDGET: usize = 4_096;

/// One function's invocations ordered by (started_time, id).
#[derive(Debug, Default)]
pub struct FunctionIndex {
    entries: BTreeSet<(i64, Arc<str>)>,
    /// How many of them are not terminal yet.
    open: usize,
}

impl FunctionIndex {
    /// How many invocations of the function are not terminal yet.
    pub fn open(&self) -> usize {
        self.open
    }

    /// One more invocation is open (accepted, or loaded while unfinished).
    pub fn opened(&mut self) {
        self.open += 1;
    }

    /// An open invocation became terminal.
    pub fn closed(&mut self) {
        self.open = self.open.saturating_sub(1);
    }

    /// Add an invocation.
    pub fn insert(&mut self, started_time_ms: i64, id: Arc<str>) {
        self.entries.insert((started_time_ms, id));
    }

    /// Remove an invocation.
    pub fn remove(&mut self, started_time_ms: i64, id: &Arc<str>) {
        self.entries.remove(&(started_time_ms, id.clone()));
    }

    /// Ids of invocations started before `cutoff_ms`, oldest first.
    pub fn started_before(&self, cutoff_ms: i64) -> impl Iterator<Item = &Arc<str>> {
        self.entries
            .iter()
            .take_while(move |(started, _)| *started < cutoff_ms)
            .map(|(_, id)| id)
    }
}

/// Sort order of a list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// Oldest first.
    Asc,
    /// Newest first.
    Desc,
}

/// A validated list request.
#[derive(Debug, Clone)]
pub struct ListQuery {
    /// The function listed.
    pub function: FunctionKey,
    /// Only this qualifier.
    pub qualifier: Option<String>,
    /// Only ids with this prefix ("" for any).
    pub id_prefix: String,
    /// Only this status.
    pub status: Option<Status>,
    /// started_time >= begin.
    pub begin: Option<i64>,
    /// started_time <= end.
    pub end: Option<i64>,
    /// Order.
    pub order: Order,
    /// Page size.
    pub limit: usize,
    /// Token of the previous page ("" for the first).
    pub next_token: String,
}

/// One page of a list.
#[derive(Debug, Clone)]
pub struct Page {
    /// Matching invocations, without events.
    pub invocations: Vec<Invocation>,
    /// Token for the next page; "" when the list is done.
    pub next_token: String,
}

fn token_kind(order: Order) -> &'static str {
    match order {
        Order::Asc => page::KIND_INVOCATIONS_ASC,
        Order::Desc => page::KIND_INVOCATIONS_DESC,
    }
}

/// What an invocation list's tokens are bound to: its account and function.
fn scope(query: &ListQuery) -> [&str; 3] {
    let f = &query.function;
    [&f.account, &f.service, &f.function]
}

/// Decode the cursor of `query`: the last entry the previous page examined.
fn cursor(signer: &PageSigner, query: &ListQuery) -> Result<Option<(i64, Arc<str>)>, StoreError> {
    if query.next_token.is_empty() {
        return Ok(None);
    }
    let parts = signer.decode(
        "next_token",
        &query.next_token,
        token_kind(query.order),
        &scope(query),
        2,
    )?;
    let time = parts[0]
        .parse::<i64>()
        .map_err(|_| StoreError::InvalidPageToken {
            field: "next_token",
            rule: "is not a token this server issued",
        })?;
    Ok(Some((time, parts[1].as_str().into())))
}

/// Run `query` over `index`, reading each examined record through `lookup`.
pub fn list(
    signer: &PageSigner,
    index: &FunctionIndex,
    query: &ListQuery,
    lookup: impl Fn(&Arc<str>) -> Option<Invocation>,
) -> Result<Page, StoreError> {
    let cursor = cursor(signer, query)?;
    let low: Bound<(i64, Arc<str>)> = match (query.order, &cursor, query.begin) {
        (Order::Asc, Some(c), _) => Bound::Excluded(c.clone()),
        (_, _, Some(begin)) => Bound::Included((begin, Arc::from(""))),
        _ => Bound::Unbounded,
    };
    let high: Bound<(i64, Arc<str>)> = match (query.order, &cursor, query.end) {
        (Order::Desc, Some(c), _) => Bound::Excluded(c.clone()),
        // No id sorts after every real id, so bound by the next millisecond, exclusive.
        (_, _, Some(end)) => Bound::Excluded((end.saturating_add(1), Arc::from(""))),
        _ => Bound::Unbounded,
    };
    // The cursor may lie outside the time window when the filter changed between pages.
    if let (Bound::Included(l) | Bound::Excluded(l), Bound::Included(h) | Bound::Excluded(h)) =
        (&low, &high)
    {
        if l >= h {
            return Ok(Page {
                invocations: Vec::new(),
                next_token: String::new(),
            });
        }
    }
    let range = index.entries.range((low, high));
    let entries: Box<dyn Iterator<Item = &(i64, Arc<str>)>> = match query.order {
        Order::Asc => Box::new(range),
        Order::Desc => Box::new(range.rev()),
    };

    let mut invocations = Vec::with_capacity(query.limit);
    let mut last: Option<&(i64, Arc<str>)> = None;
    let mut exhausted = true;
    for (examined, entry) in entries.enumerate() {
        if invocations.len() == query.limit || examined == SCAN_BUDGET {
            exhausted = false;
            break;
        }
        last = Some(entry);
        if !entry.1.starts_with(query.id_prefix.as_str()) {
            continue;
        }
        let Some(invocation) = lookup(&entry.1) else {
            continue;
        };
        let status_matches = query.status.is_none_or(|s| s == invocation.status);
        let qualifier_matches = query
            .qualifier
            .as_deref()
            .is_none_or(|q| q == &*invocation.qualifier);
        if status_matches && qualifier_matches {
            invocations.push(invocation);
        }
    }
    let next_token = match (exhausted, last) {
        (false, Some((time, id))) => signer.encode(
            token_kind(query.order),
            &scope(query),
            &[&time.to_string(), id],
        ),
        _ => String::new(),
    };
    Ok(Page {
        invocations,
        next_token,
    })
}
