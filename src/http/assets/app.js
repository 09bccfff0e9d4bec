// The sai dashboard: functions with their queue depth, a function's invocations with the
// API's filters and paging, one invocation's timeline, a stop button, and live changes from
// /api/v1/changes. Text from the server is only ever set as textContent.
'use strict';

const STATUS = ['Unspecified', 'Enqueued', 'Dequeued', 'Running', 'Succeeded', 'Failed',
  'Stopped', 'Stopping', 'Expired', 'Invalid', 'Retrying'];
const TERMINAL = new Set(['Succeeded', 'Failed', 'Stopped', 'Expired', 'Invalid']);
const FUNCTIONS_REFRESH_MS = 2000;
const RECONNECT_MS = 1000;
// Queue depths follow changes, at most this often.
const DEPTH_REFRESH_MS = 250;

const $ = (id) => document.getElementById(id);
const state = {
  token: sessionStorage.getItem('sai-token') || '',
  fn: null, // { service, fn }
  pageToken: '', // token of the page shown ('' for the first)
  nextToken: '',
  rows: new Map(), // invocation id -> <tr>
  selected: null, // invocation id in the detail pane
  watch: null, // AbortController of the change stream
  lastSequence: 0,
  depthRefresh: null, // a pending refresh of the functions' queue depths
};

const statusName = (n) => STATUS[n] || String(n);
const time = (ms) => (ms > 0 ? new Date(ms).toISOString().replace('T', ' ').replace('Z', '') : '');

function showError(text) {
  const box = $('error');
  box.textContent = text;
  box.hidden = !text;
}

function headers() {
  const h = {};
  const account = $('account').value.trim();
  if (state.token) h.authorization = `Bearer ${state.token}`;
  else if (account) h['x-fc-account-id'] = account;
  return h;
}

// A JSON API call; a refusal becomes an Error with the server's message.
async function api(path, options = {}) {
  const answer = await fetch(path, { ...options, headers: { ...headers(), ...(options.headers || {}) } });
  if (answer.status === 401) {
    $('auth').hidden = false;
    throw new Error('a valid token is needed');
  }
  const body = await answer.json().catch(() => ({}));
  if (!answer.ok) throw new Error(`${body.code || answer.status}: ${body.message || answer.statusText}`);
  return body;
}

// ---- functions

async function refreshFunctions() {
  let page;
  try {
    page = await api('/api/v1/functions');
  } catch (err) {
    showError(err.message);
    return;
  }
  const list = $('functions');
  list.replaceChildren();
  for (const f of page.functions) {
    const item = document.createElement('li');
    item.className = 'function';
    item.dataset.service = f.service_name;
    item.dataset.function = f.function_name;
    const name = document.createElement('span');
    name.textContent = `${f.service_name}/${f.function_name}`;
    const depth = document.createElement('span');
    depth.className = 'depth';
    depth.title = 'queued';
    depth.textContent = f.queue_depth;
    item.append(name, depth);
    if (state.fn && state.fn.service === f.service_name && state.fn.fn === f.function_name) {
      item.classList.add('selected');
    }
    item.addEventListener('click', () => selectFunction(f.service_name, f.function_name));
    list.append(item);
  }
  $('functions-empty').hidden = page.functions.length > 0;
  if (!state.fn && page.functions.length > 0) {
    selectFunction(page.functions[0].service_name, page.functions[0].function_name);
  }
}

function selectFunction(service, fn) {
  state.fn = { service, fn };
  for (const item of document.querySelectorAll('.function')) {
    item.classList.toggle('selected', item.dataset.service === service && item.dataset.function === fn);
  }
  $('list-title').textContent = `Invocations of ${service}/${fn}`;
  closeDetail();
  watchChanges();
  loadPage('');
}

// ---- the list

function filters() {
  const ms = (input) => (input.value ? Date.parse(`${input.value}Z`) : 0);
  return {
    status: $('f-status').value,
    prefix: $('f-prefix').value.trim(),
    from: ms($('f-from')),
    to: ms($('f-to')),
    order: $('f-order').value,
    limit: Number($('f-limit').value),
  };
}

async function loadPage(token) {
  if (!state.fn) return;
  const f = filters();
  const query = new URLSearchParams({
    service_name: state.fn.service,
    function_name: state.fn.fn,
    status: f.status,
    invocation_id_prefix: f.prefix,
    started_time_begin: f.from,
    started_time_end: f.to,
    sort_order: f.order,
    limit: f.limit,
    next_token: token,
  });
  let page;
  try {
    page = await api(`/api/v1/invocations?${query}`);
  } catch (err) {
    showError(err.message);
    return;
  }
  showError('');
  state.pageToken = token;
  state.nextToken = page.next_token;
  state.rows.clear();
  const body = $('invocations').tBodies[0];
  body.replaceChildren(...page.invocations.map(row));
  $('list-empty').hidden = page.invocations.length > 0;
  $('page-next').disabled = !page.next_token;
  $('page-first').disabled = !token;
  $('page-info').textContent = `${page.invocations.length} shown${page.next_token ? ', more on the next page' : ''}`;
}

function row(inv) {
  const tr = document.createElement('tr');
  tr.dataset.id = inv.invocation_id;
  for (const name of ['id', 'status', 'started', 'ended', 'retries']) {
    const td = document.createElement('td');
    td.className = name;
    tr.append(td);
  }
  fillRow(tr, inv);
  tr.addEventListener('click', () => openDetail(inv.invocation_id));
  if (inv.invocation_id === state.selected) tr.classList.add('selected');
  state.rows.set(inv.invocation_id, tr);
  return tr;
}

function fillRow(tr, inv) {
  const status = statusName(inv.status);
  tr.querySelector('.id').textContent = inv.invocation_id;
  const cell = tr.querySelector('.status');
  cell.textContent = status;
  cell.className = `status s-${status}`;
  tr.querySelector('.started').textContent = time(inv.started_time);
  tr.querySelector('.ended').textContent = time(inv.end_time);
  tr.querySelector('.retries').textContent = inv.already_retried_times;
  tr.dataset.status = status;
}

// Whether an invocation belongs on the page shown: the first page, newest first, matching
// the filters (a new invocation is the newest one).
function belongsOnFirstPage(inv) {
  const f = filters();
  if (state.pageToken || f.order !== 'desc') return false;
  if (f.status && f.status !== statusName(inv.status)) return false;
  if (f.prefix && !inv.invocation_id.startsWith(f.prefix)) return false;
  if (f.from && inv.started_time < f.from) return false;
  if (f.to && inv.started_time > f.to) return false;
  return true;
}

function applyChange(change) {
  const inv = change.invocation;
  if (!inv || !state.fn || inv.service_name !== state.fn.service || inv.function_name !== state.fn.fn) return;
  const tr = state.rows.get(inv.invocation_id);
  if (tr) {
    // A terminal status is final: a change delivered late never takes it back.
    if (!(TERMINAL.has(tr.dataset.status) && !TERMINAL.has(statusName(inv.status)))) fillRow(tr, inv);
  } else if (belongsOnFirstPage(inv)) {
    const body = $('invocations').tBodies[0];
    body.prepend(row(inv));
    $('list-empty').hidden = true;
    const limit = filters().limit;
    while (body.rows.length > limit) {
      const last = body.rows[body.rows.length - 1];
      state.rows.delete(last.dataset.id);
      last.remove();
      $('page-next').disabled = false;
    }
  }
  if (state.selected === inv.invocation_id) openDetail(inv.invocation_id);
  if (!state.depthRefresh) {
    state.depthRefresh = setTimeout(() => { state.depthRefresh = null; refreshFunctions(); }, DEPTH_REFRESH_MS);
  }
}

// ---- live changes: server-sent events read with fetch, so that the token goes in a header

function setLive(on) {
  const live = $('live');
  live.textContent = on ? 'live' : 'reconnecting';
  live.className = `live ${on ? 'on' : 'off'}`;
}

async function watchChanges() {
  if (state.watch) state.watch.abort();
  const controller = new AbortController();
  state.watch = controller;
  state.lastSequence = 0;
  const scope = { ...state.fn };
  while (!controller.signal.aborted) {
    try {
      const query = new URLSearchParams({
        service_name: scope.service,
        function_name: scope.fn,
        from_sequence: state.lastSequence,
      });
      const answer = await fetch(`/api/v1/changes?${query}`, { headers: headers(), signal: controller.signal });
      if (answer.status === 401) $('auth').hidden = false;
      if (!answer.ok) throw new Error(`changes: ${answer.status}`);
      setLive(true);
      await readEvents(answer.body, controller.signal);
    } catch (err) {
      if (controller.signal.aborted) return;
      // A resume point older than the server keeps: reload the page and go on from now.
      if (String(err.message).includes('OUT_OF_RANGE')) {
        state.lastSequence = 0;
        loadPage(state.pageToken);
      }
    }
    setLive(false);
    await new Promise((resolve) => setTimeout(resolve, RECONNECT_MS));
  }
}

async function readEvents(body, signal) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '';
  while (!signal.aborted) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let end;
    while ((end = buffer.indexOf('\n\n')) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let event = 'message';
      let data = '';
      for (const line of block.split('\n')) {
        if (line.startsWith('event:')) event = line.slice(6).trim();
        else if (line.startsWith('data:')) data += line.slice(5).trim();
      }
      if (event === 'change') {
        const change = JSON.parse(data);
        state.lastSequence = change.sequence;
        applyChange(change);
      } else if (event === 'error') {
        throw new Error(data);
      }
    }
  }
}

// ---- one invocation

function closeDetail() {
  state.selected = null;
  $('detail').hidden = true;
}

async function openDetail(id) {
  state.selected = id;
  for (const [rowId, tr] of state.rows) tr.classList.toggle('selected', rowId === id);
  let inv;
  try {
    inv = await api(`/api/v1/invocations/${encodeURIComponent(state.fn.service)}/${encodeURIComponent(state.fn.fn)}/${encodeURIComponent(id)}`);
  } catch (err) {
    showError(err.message);
    return;
  }
  if (state.selected !== id) return;
  const status = statusName(inv.status);
  $('d-id').textContent = inv.invocation_id;
  $('d-status').textContent = status;
  $('d-status').className = `s-${status}`;
  $('d-function').textContent = `${inv.service_name}/${inv.function_name}`;
  $('d-qualifier').textContent = inv.qualifier;
  $('d-started').textContent = time(inv.started_time);
  $('d-ended').textContent = time(inv.end_time);
  $('d-retries').textContent = inv.already_retried_times;
  $('d-request').textContent = inv.request_id;
  $('d-payload').textContent = inv.invocation_payload;
  $('d-return').textContent = inv.return_payload;
  $('d-error').textContent = inv.invocation_error_message;
  $('d-stop').disabled = TERMINAL.has(status) || status === 'Stopping';
  $('d-events').replaceChildren(...inv.events.map((e) => {
    const li = document.createElement('li');
    li.dataset.status = statusName(e.status);
    li.textContent = `${time(e.timestamp)}  ${statusName(e.status)}${e.event_detail ? ` — ${e.event_detail}` : ''}`;
    return li;
  }));
  $('detail').hidden = false;
}

async function stopSelected() {
  const id = state.selected;
  if (!id) return;
  $('d-stop').disabled = true;
  try {
    await api(`/api/v1/invocations/${encodeURIComponent(state.fn.service)}/${encodeURIComponent(state.fn.fn)}/${encodeURIComponent(id)}/stop`, { method: 'POST' });
    showError('');
  } catch (err) {
    showError(err.message);
  }
  openDetail(id);
}

// ---- wiring

$('filters').addEventListener('submit', (e) => { e.preventDefault(); loadPage(''); });
$('page-next').addEventListener('click', () => loadPage(state.nextToken));
$('page-first').addEventListener('click', () => loadPage(''));
$('d-stop').addEventListener('click', stopSelected);
$('account').value = sessionStorage.getItem('sai-account') || '';
$('account').addEventListener('change', () => {
  sessionStorage.setItem('sai-account', $('account').value.trim());
  state.fn = null;
  refreshFunctions();
});
$('auth').addEventListener('submit', (e) => {
  e.preventDefault();
  state.token = $('token').value.trim();
  sessionStorage.setItem('sai-token', state.token);
  $('auth').hidden = true;
  showError('');
  refreshFunctions();
  if (state.fn) selectFunction(state.fn.service, state.fn.fn);
});

refreshFunctions();
setInterval(refreshFunctions, FUNCTIONS_REFRESH_MS);
