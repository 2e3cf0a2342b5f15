// anneal's dashboard. Every piece of site data is set as text
// (textContent), never as markup: the site repository's authors do not
// run script in the operator's browser. The API token lives in
// sessionStorage only and is sent as an Authorization header, never in a
// URL.
'use strict';

(() => {
  const TOKEN_KEY = 'anneal.token';
  const REFRESH_MS = 1500;
  const HISTORY_EVERY = 3; // refreshes
  const $ = (id) => document.getElementById(id);

  const view = { region: '', rack: '', state: '', q: '', page: 1, pages: 1 };
  let status = null;
  let tick = 0;
  let timer = 0;

  // --- small helpers -------------------------------------------------------

  function el(tag, text, cls) {
    const e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (cls) e.className = cls;
    return e;
  }

  function setText(id, text) { $(id).textContent = text === undefined || text === null || text === '' ? '–' : String(text); }

  function short(rev) { return rev ? String(rev).slice(0, 12) : ''; }

  function ago(iso) {
    if (!iso) return '';
    const t = Date.parse(iso);
    if (Number.isNaN(t) || t <= 0) return '';
    const s = Math.max(0, Math.round((Date.now() - t) / 1000));
    if (s < 60) return s + ' s ago';
    if (s < 3600) return Math.round(s / 60) + ' min ago';
    if (s < 86400) return Math.round(s / 3600) + ' h ago';
    return new Date(t).toISOString().replace('T', ' ').slice(0, 16) + 'Z';
  }

  function timeCell(iso) {
    const td = el('td', ago(iso));
    if (iso) td.title = iso;
    return td;
  }

  function token() { return sessionStorage.getItem(TOKEN_KEY) || ''; }

  function say(kind, text) {
    const m = $('message');
    m.hidden = false;
    m.className = kind;
    m.textContent = text;
  }

  async function getJSON(url) {
    const r = await fetch(url, { headers: { Accept: 'application/json' }, cache: 'no-store', credentials: 'same-origin' });
    if (!r.ok) {
      let detail = '';
      try { detail = (await r.json()).error || ''; } catch (_) { /* not JSON */ }
      const e = new Error(r.status + (detail ? ': ' + detail : ''));
      e.status = r.status;
      throw e;
    }
    return r.json();
  }

  // --- the token and the actions ---------------------------------------------

  function tokenChanged() {
    const has = token() !== '';
    for (const b of document.querySelectorAll('.needs-token')) {
      b.disabled = !has;
      b.title = has ? '' : 'enter the API token (serve --token) to act';
    }
    $('token-forget').hidden = !has;
    $('token-state').textContent = has ? 'token set for this tab' : 'read-only: actions need the token';
  }

  // act POSTs to a token-guarded API route and says how it went.
  async function act(what, url, body) {
    const t = token();
    if (!t) {
      say('err', what + ': not sent: enter the API token first (the dashboard is read-only without it)');
      return;
    }
    const init = { method: 'POST', headers: { Authorization: 'Bearer ' + t }, cache: 'no-store', credentials: 'same-origin' };
    if (body !== undefined) {
      init.headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    let r;
    try {
      r = await fetch(url, init);
    } catch (e) {
      say('err', what + ' failed: ' + e.message);
      return;
    }
    let detail = '';
    try {
      const j = await r.json();
      detail = j.error || j.status || '';
    } catch (_) { /* not JSON */ }
    if (r.status === 403) {
      say('err', what + ' refused: the token is not valid (403)' + (detail ? ': ' + detail : ''));
    } else if (!r.ok) {
      say('err', what + ' failed: ' + r.status + (detail ? ': ' + detail : ''));
    } else {
      say('ok', what + ': ' + (detail || 'done'));
    }
    refresh();
  }

  // --- status, rollout, approvals -------------------------------------------

  function renderStatus(st) {
    status = st;
    $('suspended').hidden = !st.suspended;
    $('mode').textContent = st.mode || '';
    setText('rev-applied', short(st.appliedRevision));
    $('rev-applied').title = st.appliedRevision || '';
    setText('rev-good', short(st.lastGoodRevision));
    setText('rev-attempted', short(st.lastAttemptedRevision));
    $('rev-attempted').title = st.lastAttemptedRevision || '';
    setText('rev-last', st.lastReconcile ? ago(st.lastReconcile) + ' (' + (st.reconciles || 0) + ' passes, ' + (st.lastDurationSeconds || 0).toFixed(1) + ' s)' : '');
    const d = st.drift || {};
    setText('rev-drift', `DNS +${d.creates || 0} ~${d.updates || 0} -${d.deletes || 0}, ${d.conflicts || 0} conflicts; ` +
      `${d.rebuilds || 0} to rebuild, ${d.decommissions || 0} to decommission, ${d.held || 0} held`);
    setText('rev-error', st.lastError ? (st.lastErrorClass ? st.lastErrorClass + ': ' : '') + st.lastError : '');

    const ro = st.rollout;
    const detail = $('rollout-detail');
    detail.replaceChildren();
    const bar = $('rollout-progress');
    if (!ro) {
      $('rollout-summary').textContent = 'No rollout yet.';
      bar.hidden = true;
    } else {
      let phase = ro.running ? 'running' : (ro.halted ? 'halted' : 'finished');
      $('rollout-summary').textContent = `Revision ${short(ro.revision)}: ${phase}, ${ro.done || 0} of ${ro.total || 0} nodes done`;
      $('rollout-summary').className = ro.running ? 'rollout-running' : (ro.halted ? 'error' : '');
      bar.hidden = false;
      bar.max = Math.max(1, ro.total || 0);
      bar.value = ro.done || 0;
      if (ro.halted) detail.append(el('li', 'halted: ' + ro.halted, 'error'));
      if (ro.canaries && ro.canaries.length) detail.append(el('li', 'canaries: ' + ro.canaries.join(', ')));
      if (ro.verified && ro.verified.length) detail.append(el('li', 'verified: ' + ro.verified.join(', ')));
      for (const [n, why] of Object.entries(ro.failed || {})) detail.append(el('li', n + ' failed: ' + why, 'error'));
      if (ro.decommissioned && ro.decommissioned.length) detail.append(el('li', 'decommissioned: ' + ro.decommissioned.join(', ')));
      if (ro.notStarted && ro.notStarted.length) detail.append(el('li', 'not started: ' + ro.notStarted.join(', ')));
    }

    const pa = st.pendingApproval;
    $('approval-none').hidden = !!pa;
    $('approval-pending').hidden = !pa;
    const reasons = $('approval-reasons');
    reasons.replaceChildren();
    if (pa) {
      $('approval-revision').textContent = short(pa.revision);
      $('approval-revision').title = pa.revision;
      $('approval-digest').textContent = short(pa.planDigest);
      $('approval-digest').title = pa.planDigest;
      $('approval-since').textContent = pa.since ? 'since ' + ago(pa.since) : '';
      for (const r of pa.reasons || []) reasons.append(el('li', r));
    }
    const ap = st.approved;
    $('approval-last').textContent = ap ? `Last approved: revision ${short(ap.revision)}, plan ${short(ap.planDigest)}, ${ago(ap.at)}${ap.started ? ', started' : ''}` : '';
  }

  function renderPlan(p) {
    if (!p.available) {
      $('plan-head').textContent = 'No plan computed yet.';
      $('plan-text').textContent = '';
      return;
    }
    let head = `Last plan of site ${p.site || ''}` + (p.digest ? `, digest ${short(p.digest)}` : '');
    if (p.pending) head += ` — awaits approval of revision ${short(p.revision)}`;
    else if (!p.changes) head += ' — nothing to do';
    $('plan-head').textContent = head;
    if ($('plan-text').textContent !== p.text) $('plan-text').textContent = p.text;
  }

  // --- the fleet -------------------------------------------------------------

  function fillSelect(sel, values, current, label) {
    const want = [''].concat(values);
    const have = Array.from(sel.options).map((o) => o.value);
    if (want.length === have.length && want.every((v, i) => v === have[i])) {
      for (const o of sel.options) if (o.value) o.textContent = label ? label(o.value) : o.value;
      return;
    }
    sel.replaceChildren(el('option', 'all'));
    sel.options[0].value = '';
    for (const v of values) {
      const o = el('option', label ? label(v) : v);
      o.value = v;
      sel.append(o);
    }
    sel.value = want.includes(current) ? current : '';
  }

  function renderNodes(pg) {
    const regions = Object.keys(pg.regions || {}).sort();
    fillSelect($('f-region'), regions, view.region);
    const racks = view.region ? (pg.regions[view.region] || []) : [...new Set(regions.flatMap((r) => pg.regions[r]))].sort();
    fillSelect($('f-rack'), racks, view.rack);
    const states = Object.keys(pg.states || {}).sort();
    fillSelect($('f-state'), states, view.state, (s) => `${s} (${pg.states[s] || 0})`);
    $('fleet-count').textContent = `${pg.matched} of ${pg.total} nodes`;
    view.page = pg.page;
    view.pages = pg.pages;
    $('page-info').textContent = `page ${pg.page} of ${pg.pages}`;
    $('page-prev').disabled = pg.page <= 1;
    $('page-next').disabled = pg.page >= pg.pages;

    const body = $('nodes-body');
    const rows = [];
    let group = null;
    for (const n of pg.nodes) {
      const g = n.region + ' / ' + n.rack;
      if (g !== group) {
        group = g;
        const tr = el('tr', null, 'group');
        const th = el('th', 'region ' + n.region + ', rack ' + n.rack);
        th.colSpan = 8;
        tr.append(th);
        rows.push(tr);
      }
      const tr = el('tr', null, 'node');
      tr.dataset.node = n.name;
      tr.append(el('td', n.name, 'mono'));
      tr.append(el('td', n.state));
      const live = el('td', n.live || 'unknown', 'state-' + (n.live || 'unknown'));
      if (n.deploy) live.append(el('div', n.deploy, 'muted'));
      tr.append(live);
      tr.append(el('td', short(n.desired), 'mono'));
      const running = el('td', short(n.running) + (n.target && n.target !== n.running ? ' → ' + short(n.target) : ''), 'mono');
      if (n.running && !n.upToDate) running.classList.add('error');
      tr.append(running);
      tr.append(el('td', n.drift || '', 'drift'));
      tr.append(timeCell(n.lastReport));
      const actions = el('td');
      if (n.live === 'failed') {
        const b = el('button', 'Retry', 'needs-token');
        b.type = 'button';
        b.addEventListener('click', () => act('retry ' + n.name, '/api/v1/nodes/' + encodeURIComponent(n.name) + '/retry'));
        actions.append(b);
      }
      tr.append(actions);
      rows.push(tr);
    }
    if (!pg.nodes.length) {
      const tr = el('tr');
      const td = el('td', 'No node matches.', 'muted');
      td.colSpan = 8;
      tr.append(td);
      rows.push(tr);
    }
    body.replaceChildren(...rows);
    tokenChanged();
  }

  function nodesURL() {
    const q = new URLSearchParams();
    for (const k of ['region', 'rack', 'state', 'q']) if (view[k]) q.set(k, view[k]);
    q.set('page', String(view.page));
    return '/ui/api/nodes?' + q.toString();
  }

  // --- history ----------------------------------------------------------------

  function counts(c) {
    return Object.entries(c || {}).filter(([, v]) => v).map(([k, v]) => k + ' ' + v).join(', ');
  }

  async function refreshHistory() {
    try {
      const list = await getJSON('/api/v1/history?limit=20');
      const rows = (list || []).map((h) => {
        const tr = el('tr');
        const rev = el('td', short(h.revision), 'mono');
        rev.title = h.revision || '';
        tr.append(rev, el('td', h.summary || ''), el('td', h.outcome || '', 'outcome-' + (h.outcome || '')),
          timeCell(h.applied || h.last || h.validated || h.seen), el('td', counts(h.counts)), el('td', h.error || '', 'error'));
        return tr;
      });
      $('history-body').replaceChildren(...rows);
      $('history-table').hidden = rows.length === 0;
      $('history-state').textContent = rows.length ? '' : 'No revision recorded yet.';
    } catch (e) {
      $('history-table').hidden = true;
      $('history-state').textContent = e.status === 404 ? 'History unavailable: this daemon serves no /api/v1/history.' : 'History unavailable: ' + e.message;
    }
    try {
      const evs = await getJSON('/api/v1/events?limit=30');
      const items = (evs || []).slice().reverse().map((ev) => {
        const li = el('li');
        const when = el('span', ago(ev.time), 'muted');
        when.title = ev.time || '';
        li.append(when, el('span', ev.kind, 'kind'));
        const where = [ev.node, ev.revision ? short(ev.revision) : ''].filter(Boolean).join(' ');
        if (where) li.append(el('span', where + ': ', 'mono'));
        li.append(el('span', ev.message || ''));
        if (ev.error) li.append(el('span', ' — ' + ev.error, 'error'));
        return li;
      });
      $('events').replaceChildren(...items);
      $('events-state').textContent = items.length ? '' : 'No events yet.';
    } catch (e) {
      $('events').replaceChildren();
      $('events-state').textContent = e.status === 404 ? 'Events unavailable: this daemon serves no /api/v1/events.' : 'Events unavailable: ' + e.message;
    }
  }

  // --- the refresh loop -------------------------------------------------------

  async function refresh() {
    clearTimeout(timer);
    if (document.hidden) { // a background tab costs the daemon nothing; shown again, it refreshes at once
      timer = setTimeout(refresh, REFRESH_MS);
      return;
    }
    const jobs = [
      getJSON('/api/v1/status').then(renderStatus),
      getJSON('/ui/api/plan').then(renderPlan),
      getJSON(nodesURL()).then(renderNodes),
    ];
    if (tick % HISTORY_EVERY === 0) jobs.push(refreshHistory());
    tick++;
    const results = await Promise.allSettled(jobs);
    const failed = results.filter((r) => r.status === 'rejected').map((r) => r.reason.message);
    $('updated').textContent = failed.length ? 'update failed: ' + failed.join('; ') : 'updated ' + new Date().toLocaleTimeString();
    $('updated').className = failed.length ? 'error' : 'muted';
    timer = setTimeout(refresh, REFRESH_MS);
  }

  function init() {
    $('token-form').addEventListener('submit', (ev) => {
      ev.preventDefault();
      const t = $('token').value.trim();
      $('token').value = '';
      if (t) sessionStorage.setItem(TOKEN_KEY, t);
      tokenChanged();
    });
    $('token-forget').addEventListener('click', () => {
      sessionStorage.removeItem(TOKEN_KEY);
      tokenChanged();
    });
    $('act-reconcile').addEventListener('click', () => act('reconcile', '/api/v1/reconcile'));
    $('act-suspend').addEventListener('click', () => act('suspend', '/api/v1/suspend'));
    $('act-resume').addEventListener('click', () => act('resume', '/api/v1/resume'));
    $('approve').addEventListener('click', () => {
      const pa = status && status.pendingApproval;
      if (!pa) return;
      act('approve revision ' + short(pa.revision), '/api/v1/approve', { revision: pa.revision, planDigest: pa.planDigest });
    });
    for (const k of ['region', 'rack', 'state']) {
      $('f-' + k).addEventListener('change', (ev) => {
        view[k] = ev.target.value;
        if (k === 'region') view.rack = '';
        view.page = 1;
        refresh();
      });
    }
    let typing = 0;
    $('f-q').addEventListener('input', (ev) => {
      clearTimeout(typing);
      typing = setTimeout(() => { view.q = ev.target.value.trim(); view.page = 1; refresh(); }, 250);
    });
    $('page-prev').addEventListener('click', () => { if (view.page > 1) { view.page--; refresh(); } });
    $('page-next').addEventListener('click', () => { if (view.page < view.pages) { view.page++; refresh(); } });
    document.addEventListener('visibilitychange', () => { if (!document.hidden) refresh(); });
    tokenChanged();
    refresh();
  }

  init();
})();
