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
}

impl FunctionIndex {
    /// Add an invocation.
    pub fn insert(&mut self, started_time_ms: i64, id: Arc<str>) {
        self.entries.insert((started_time_ms, id));
    }

    /// Remove an invocation.
    pub fn remove(&mut self, started_time_ms: i64, id: &Arc<str>) {
        self.entries.remove(&(started_time_ms, id.clone()));
    }

    /// Invocations started before `cutoff_ms`, as (started time, id), oldest first: all of
    /// them, or those after `after`.
    pub fn started_before(
        &self,
        after: Option<&(i64, Arc<str>)>,
        cutoff_ms: i64,
    ) -> impl Iterator<Item = &(i64, Arc<str>)> {
        let low = after.map_or(Bound::Unbounded, |after| Bound::Excluded(after.clone()));
        self.entries
            .range((low, Bound::Unbounded))
            .take_while(move |(started, _)| *started < cutoff_ms)
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

/// One entry a page examines.
pub trait ListEntry {
    /// Its (started time, id).
    fn position(&self) -> (i64, &str);
}

/// The range of positions a page of `query` covers: after its token's cursor, within its
/// time filter. `None` when that range is empty.
pub type Range = (Bound<(i64, Arc<str>)>, Bound<(i64, Arc<str>)>);

/// The range `query` covers, or `None` if it is empty; an invalid token is refused.
pub fn range(signer: &PageSigner, query: &ListQuery) -> Result<Option<Range>, StoreError> {
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
    if is_empty(&low, &high) {
        return Ok(None);
    }
    Ok(Some((low, high)))
}

/// Whether no position lies between `low` and `high`, as [`range`] builds them.
pub fn is_empty(low: &Bound<(i64, Arc<str>)>, high: &Bound<(i64, Arc<str>)>) -> bool {
    match (low, high) {
        (Bound::Included(l) | Bound::Excluded(l), Bound::Included(h) | Bound::Excluded(h)) => {
            l >= h
        }
        _ => false,
    }
}

/// One page of `query` from `entries`, the entries of its range in its order: at most
/// `limit` matches, and at most [`SCAN_BUDGET`] entries examined. `read` gives the invocation
/// behind an entry, without events, if it still exists; only entries whose id matches the
/// prefix are read.
pub fn page<E: ListEntry>(
    signer: &PageSigner,
    query: &ListQuery,
    entries: impl Iterator<Item = Result<E, StoreError>>,
    mut read: impl FnMut(E) -> Result<Option<Invocation>, StoreError>,
) -> Result<Page, StoreError> {
    let mut invocations = Vec::with_capacity(query.limit);
    let mut last: Option<(i64, String)> = None;
    let mut exhausted = true;
    for (examined, entry) in entries.enumerate() {
        if invocations.len() == query.limit || examined == SCAN_BUDGET {
            exhausted = false;
            break;
        }
        let entry = entry?;
        let (time, id) = entry.position();
        let matches_prefix = id.starts_with(query.id_prefix.as_str());
        last = Some((time, id.to_string()));
        if !matches_prefix {
            continue;
        }
        let Some(invocation) = read(entry)? else {
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
            &[&time.to_string(), &id],
        ),
        _ => String::new(),
    };
    Ok(Page {
        invocations,
        next_token,
    })
}

/// An empty last page.
pub fn empty_page() -> Page {
    Page {
        invocations: Vec::new(),
        next_token: String::new(),
    }
}

impl FunctionIndex {
    /// The entries of `range` in `order`.
    pub fn entries(
        &self,
        range: Range,
        order: Order,
    ) -> Box<dyn Iterator<Item = &(i64, Arc<str>)> + '_> {
        let range = self.entries.range(range);
        match order {
            Order::Asc => Box::new(range),
            Order::Desc => Box::new(range.rev()),
        }
    }
}
