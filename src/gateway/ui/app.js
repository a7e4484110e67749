// stackctl admin page: log in, edit the gateway's route table, change the
// admin password, watch the stack's status, take and restore backups.
//
// Rules of this file (the page runs under a strict CSP and shows data that
// anyone with the password can write):
// - data reaches the DOM only through textContent / value / setAttribute of
//   fixed attribute names, never through an HTML parser;
// - no inline scripts, styles or handlers (the CSP forbids them anyway);
// - the password lives in memory and in sessionStorage (this tab only).
'use strict';

(() => {
  // ---------------------------------------------------------------- basics

  /** The admin API's base path: `/admin/` when the page is `/admin/ui/`. */
  const API_BASE = location.pathname.replace(/\/ui(\/.*)?$/, '/');
  const STORAGE_KEY = 'stackctl.adminPassword';
  const MIN_PASSWORD = 10;
  const STATUS_EVERY_MS = 10000;
  /** How often the backup state is read while a backup or restore runs. */
  const PROGRESS_EVERY_MS = 1000;
  const SNAPSHOT_PAGE = 50;
  const HEADER_NAME = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
  const PRINTABLE_ASCII = /^[\x20-\x7e]*$/;
  const KNOWN_PHASES = ['disabled', 'waiting', 'starting', 'ready', 'backoff', 'exited', 'failed', 'stopping', 'stopped'];
  const RULE_KEYS = ['id', 'priority', 'action', 'backend', 'strip_prefix', 'set_headers', 'redirect_to',
    'redirect_to_prefix', 'redirect_code', 'match'];
  const MATCH_TEXT_KEYS = ['path_prefix', 'path_equal', 'host', 'method', 'referer_substr', 'referer_regex'];
  const FIELD_LABELS = {
    id: 'Id', priority: 'Priority', action: 'Action', backend: 'Backend', strip_prefix: 'Strip prefix',
    set_headers: 'Set headers', redirect_to: 'Redirect to', redirect_to_prefix: 'Redirect to prefix',
    redirect_code: 'Status', path_prefix: 'Path prefix', path_equal: 'Path equals', host: 'Host',
    method: 'Method', referer_substr: 'Referer contains', referer_regex: 'Referer matches',
    headers: 'Headers', match: 'Match',
  };

  const state = {
    password: null,
    /** `{default_backend, rules}` as last read from the server. */
    table: null,
    etag: null,
    /** Index of the rule in the editor; -1 for a new rule. */
    editing: -1,
    /** The user typed an id (so it is no longer derived from the prefix). */
    idTouched: false,
    statusTimer: null,
    retryTimer: null,
    /** The last `GET persist` answer; null before it (or when the gateway has no backup API). */
    persist: null,
    /** Snapshots shown, and the cursor of the next (older) page. */
    snapshots: [],
    snapshotsNext: null,
    progressTimer: null,
    /** A backup or restore this page started is waiting for its answer. */
    busy: false,
    /** The snapshot in the restore dialog: `{id, short}`. */
    restoring: null,
  };

  const $ = (id) => {
    const node = document.getElementById(id);
    if (!node) throw new Error('missing element #' + id);
    return node;
  };

  /** A new element with text children only (strings become text nodes). */
  function el(tag, opts, ...children) {
    const node = document.createElement(tag);
    if (opts) {
      if (opts.className) node.className = opts.className;
      if (opts.text !== undefined) node.textContent = String(opts.text);
      if (opts.attrs) for (const [k, v] of Object.entries(opts.attrs)) node.setAttribute(k, String(v));
      if (opts.onClick) node.addEventListener('click', opts.onClick);
    }
    for (const c of children) {
      if (c === null || c === undefined) continue;
      node.append(typeof c === 'string' ? document.createTextNode(c) : c);
    }
    return node;
  }

  function showText(node, text) {
    node.textContent = text;
    node.hidden = false;
  }

  function hide(node) {
    node.textContent = '';
    node.hidden = true;
  }

  /** Plain-text rendering of any JSON value for display. */
  function display(value) {
    if (value === null || value === undefined || value === '') return '—';
    if (typeof value === 'object') return JSON.stringify(value);
    return String(value);
  }

  function storage() {
    try {
      return window.sessionStorage;
    } catch {
      return null; // storage disabled: the password then lives in memory only
    }
  }

  // ---------------------------------------------------------------- API

  /** One admin API call; resolves with `{status, headers, data}` or rejects on a network error. */
  async function api(method, path, opts = {}) {
    const headers = { 'X-Admin-Password': state.password || '' };
    let body;
    if (opts.body !== undefined) {
      headers['Content-Type'] = 'application/json';
      body = JSON.stringify(opts.body);
    }
    if (opts.ifMatch) headers['If-Match'] = opts.ifMatch;
    let res;
    try {
      res = await fetch(API_BASE + path, {
        method, headers, body, cache: 'no-store', credentials: 'same-origin', redirect: 'error',
      });
    } catch (e) {
      throw new Error('cannot reach the gateway (' + (e && e.message ? e.message : 'network error') + ')');
    }
    const text = await res.text();
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch {
      data = null;
    }
    return { status: res.status, headers: res.headers, data, text };
  }

  function retryAfter(res) {
    const raw = res.headers.get('Retry-After');
    const n = raw === null ? NaN : parseInt(raw, 10);
    return Number.isFinite(n) && n >= 0 ? n : null;
  }

  /** The message a failed call shows: the server's `{"error"}` when it sent one. */
  function errorMessage(res) {
    if (res.status === 429) {
      const s = retryAfter(res);
      return 'Too many wrong passwords; retry in ' + (s === null ? 'a while' : s + ' s') + '.';
    }
    if (res.status === 403) return 'Wrong password.';
    if (res.data && typeof res.data === 'object' && typeof res.data.error === 'string' && res.data.error) {
      return res.data.error;
    }
    return 'The gateway answered ' + res.status + (res.text ? ': ' + res.text.slice(0, 200) : '.');
  }

  function banner(text, kind) {
    const b = $('banner');
    b.className = 'banner ' + (kind || 'info');
    showText(b, text);
  }

  /** The password stopped working (changed elsewhere): back to the login form. */
  function forbidden() {
    logout();
    showText($('login-error'), 'Wrong password — it may have been changed elsewhere. Log in again.');
  }

  // ---------------------------------------------------------------- login

  async function login(password, quiet) {
    const err = $('login-error');
    hide(err);
    if (!password) {
      showText(err, 'Enter the admin password.');
      return;
    }
    if (!PRINTABLE_ASCII.test(password)) {
      showText(err, 'This password has characters a browser cannot send in a header; use `stackctl routes password` to set a plain ASCII one.');
      return;
    }
    const submit = $('login-submit');
    submit.disabled = true;
    state.password = password;
    let res;
    try {
      res = await api('GET', 'routes.json');
    } catch (e) {
      state.password = null;
      submit.disabled = false;
      showText(err, capitalise(e.message) + '.');
      return;
    }
    if (res.status === 200) {
      submit.disabled = false;
      const st = storage();
      if (st) st.setItem(STORAGE_KEY, password);
      $('login-password').value = '';
      applyTable(res);
      enterApp();
      return;
    }
    state.password = null;
    const st = storage();
    if (st) st.removeItem(STORAGE_KEY);
    if (res.status === 429) {
      countdown(retryAfter(res));
    } else {
      submit.disabled = false;
      if (!(quiet && res.status === 403)) showText(err, errorMessage(res));
    }
  }

  /** Disable the login button for `seconds`, showing the time left. */
  function countdown(seconds) {
    const err = $('login-error');
    const submit = $('login-submit');
    clearInterval(state.retryTimer);
    let left = seconds === null ? 30 : seconds;
    const tick = () => {
      if (left <= 0) {
        clearInterval(state.retryTimer);
        submit.disabled = false;
        showText(err, 'You can try again now.');
        return;
      }
      submit.disabled = true;
      showText(err, 'Too many wrong passwords; retry in ' + left + ' s.');
      left -= 1;
    };
    tick();
    state.retryTimer = setInterval(tick, 1000);
  }

  function enterApp() {
    $('login-view').hidden = true;
    $('app-view').hidden = false;
    $('logout').hidden = false;
    hide($('banner'));
    refreshAll();
    clearInterval(state.statusTimer);
    state.statusTimer = setInterval(() => {
      if (document.visibilityState === 'visible' && state.password) refreshAll();
    }, STATUS_EVERY_MS);
  }

  function logout() {
    state.password = null;
    state.table = null;
    state.etag = null;
    state.persist = null;
    state.snapshots = [];
    state.snapshotsNext = null;
    state.restoring = null;
    clearInterval(state.statusTimer);
    clearTimeout(state.progressTimer);
    const st = storage();
    if (st) st.removeItem(STORAGE_KEY);
    const editor = $('editor');
    if (editor.open) editor.close();
    const restoreDialog = $('restore-dialog');
    if (restoreDialog.open) restoreDialog.close();
    $('snapshots-body').replaceChildren();
    $('persist-state').replaceChildren();
    $('restore-preview').replaceChildren();
    // Drop what was shown, so nothing lingers for the next person at this screen.
    $('rules-body').replaceChildren();
    $('services-body').replaceChildren();
    $('status-summary').replaceChildren();
    $('backup-list').replaceChildren();
    $('default-backend').value = '';
    for (const id of ['routes-message', 'default-error', 'status-error', 'password-error', 'password-ok', 'banner',
      'backups-message', 'backups-progress']) {
      hide($(id));
    }
    $('app-view').hidden = true;
    $('logout').hidden = true;
    $('login-view').hidden = false;
    $('login-submit').disabled = false;
    $('login-password').focus();
  }

  // ---------------------------------------------------------------- route table

  function applyTable(res) {
    const data = res.data && typeof res.data === 'object' ? res.data : {};
    const rules = Array.isArray(data.rules) ? data.rules.filter((r) => r && typeof r === 'object' && !Array.isArray(r)) : [];
    state.table = {
      default_backend: typeof data.default_backend === 'string' ? data.default_backend : '',
      rules,
    };
    state.etag = res.headers.get('ETag');
    renderTable();
  }

  async function reloadTable(message) {
    let res;
    try {
      res = await api('GET', 'routes.json');
    } catch (e) {
      routesMessage(capitalise(e.message) + '.', 'error');
      return false;
    }
    if (res.status === 403) {
      forbidden();
      return false;
    }
    if (res.status !== 200) {
      routesMessage(errorMessage(res), 'error');
      return false;
    }
    applyTable(res);
    if (message) routesMessage(message, 'ok');
    else hide($('routes-message'));
    return true;
  }

  function routesMessage(text, kind) {
    const m = $('routes-message');
    m.className = 'message ' + kind;
    showText(m, text);
  }

  function renderTable() {
    const table = state.table;
    if (!table) return;
    const input = $('default-backend');
    if (document.activeElement !== input) input.value = table.default_backend;
    const body = $('rules-body');
    body.replaceChildren();
    table.rules.forEach((rule, i) => body.append(ruleRow(rule, i, table.rules.length)));
    $('rules-empty').hidden = table.rules.length !== 0;
    $('rules-table').hidden = table.rules.length === 0;
  }

  function ruleRow(rule, i, count) {
    const id = display(rule.id);
    const tr = el('tr', { attrs: { 'data-rule-index': i } });
    tr.append(
      el('td', { className: 'num', attrs: { 'data-label': '#' }, text: i + 1 }),
      el('td', { className: 'rule-id', attrs: { 'data-label': 'Id' } }, el('code', { text: id })),
      el('td', { className: 'num', attrs: { 'data-label': 'Priority' }, text: display(rule.priority ?? 0) }),
      el('td', { attrs: { 'data-label': 'Match' } }, matchSummary(rule.match)),
      el('td', { attrs: { 'data-label': 'Action' } }, actionSummary(rule)),
    );
    const up = el('button', {
      className: 'secondary small', text: '↑',
      attrs: { type: 'button', 'aria-label': 'Move ' + id + ' up', title: 'Move up' },
      onClick: () => moveRule(i, -1),
    });
    up.disabled = i === 0;
    const down = el('button', {
      className: 'secondary small', text: '↓',
      attrs: { type: 'button', 'aria-label': 'Move ' + id + ' down', title: 'Move down' },
      onClick: () => moveRule(i, 1),
    });
    down.disabled = i === count - 1;
    const edit = el('button', {
      className: 'secondary small edit', text: 'Edit',
      attrs: { type: 'button', 'aria-label': 'Edit ' + id }, onClick: () => openEditor(i),
    });
    const del = el('button', {
      className: 'secondary small danger delete', text: 'Delete',
      attrs: { type: 'button', 'aria-label': 'Delete ' + id },
    });
    // Two clicks delete: the first arms the button for a few seconds.
    let armed = null;
    del.addEventListener('click', () => {
      if (armed) {
        clearTimeout(armed);
        armed = null;
        deleteRule(i);
        return;
      }
      del.textContent = 'Confirm';
      del.classList.add('armed');
      armed = setTimeout(() => {
        armed = null;
        del.textContent = 'Delete';
        del.classList.remove('armed');
      }, 4000);
    });
    tr.append(el('td', { className: 'row-actions', attrs: { 'data-label': '' } }, up, down, edit, del));
    return tr;
  }

  function matchSummary(match) {
    const list = el('ul', { className: 'chips' });
    if (match && typeof match === 'object') {
      for (const key of MATCH_TEXT_KEYS) {
        if (match[key] !== undefined && match[key] !== null && match[key] !== '') {
          list.append(chip(FIELD_LABELS[key], display(match[key])));
        }
      }
      if (Array.isArray(match.headers)) {
        for (const h of match.headers) {
          if (!h || typeof h !== 'object') continue;
          const isRegex = h.regex !== undefined && h.regex !== null;
          list.append(chip('Header ' + display(h.name) + (isRegex ? ' matches' : ' contains'),
            display(isRegex ? h.regex : h.contains)));
        }
      }
      for (const [k, v] of Object.entries(match)) {
        if (!MATCH_TEXT_KEYS.includes(k) && k !== 'headers') list.append(chip(k, display(v)));
      }
    }
    if (!list.childElementCount) list.append(el('li', { className: 'muted', text: 'everything' }));
    return list;
  }

  function chip(label, value) {
    return el('li', { className: 'chip' }, el('span', { className: 'chip-label', text: label }), ' ', el('code', { text: value }));
  }

  function actionSummary(rule) {
    const box = el('div', { className: 'action' });
    if (rule.action === 'redirect') {
      const target = rule.redirect_to !== undefined && rule.redirect_to !== null
        ? display(rule.redirect_to)
        : display(rule.redirect_to_prefix) + '…';
      box.append(el('span', { className: 'badge redirect', text: 'redirect ' + display(rule.redirect_code ?? 302) }), ' ',
        el('code', { text: target }));
    } else {
      box.append(el('span', { className: 'badge proxy', text: 'proxy' }), ' ', el('code', { text: display(rule.backend) }));
      const notes = [];
      if (rule.strip_prefix) notes.push('strips prefix');
      if (rule.set_headers && typeof rule.set_headers === 'object') {
        const n = Object.keys(rule.set_headers).length;
        if (n) notes.push('sets ' + n + ' header' + (n === 1 ? '' : 's'));
      }
      if (notes.length) box.append(el('div', { className: 'muted small-text', text: notes.join(', ') }));
    }
    return box;
  }

  /** A copy of `value` without empty strings, nulls, `false`, `{}` and `[]` (recursively). */
  function prune(value) {
    if (Array.isArray(value)) {
      return value.map(prune).filter((v) => v !== undefined);
    }
    if (value && typeof value === 'object') {
      const out = {};
      for (const [k, v] of Object.entries(value)) {
        const p = prune(v);
        if (p === undefined || p === '' || p === null || p === false) continue;
        if (Array.isArray(p) && p.length === 0) continue;
        if (typeof p === 'object' && !Array.isArray(p) && Object.keys(p).length === 0) continue;
        out[k] = p;
      }
      return out;
    }
    return value;
  }

  /**
   * POST a whole table with If-Match; on success reload it (new ETag).
   * Resolves with `{ok, message}`.
   */
  async function saveTable(rules, defaultBackend, okMessage) {
    const body = { rules: rules.map(prune) };
    if (defaultBackend) body.default_backend = defaultBackend;
    let res;
    try {
      res = await api('POST', 'routes.json', { body, ifMatch: state.etag });
    } catch (e) {
      return { ok: false, message: capitalise(e.message) + '.' };
    }
    if (res.status === 200) {
      await reloadTable(okMessage);
      // The status card shows the route count and ETag: never stale.
      loadStatus();
      return { ok: true };
    }
    if (res.status === 403) {
      forbidden();
      return { ok: false, message: 'Wrong password.' };
    }
    if (res.status === 412) {
      // Someone else saved first: fetch their table (nothing of ours was
      // written) and let the user redo the change on top of it.
      await reloadTable();
      return { ok: false, stale: true, message: 'The table changed elsewhere and has been reloaded; make your change again.' };
    }
    return { ok: false, message: errorMessage(res) };
  }

  async function moveRule(i, delta) {
    const rules = state.table.rules.slice();
    const j = i + delta;
    if (j < 0 || j >= rules.length) return;
    [rules[i], rules[j]] = [rules[j], rules[i]];
    const r = await saveTable(rules, state.table.default_backend, 'Moved ' + display(rules[j].id) + '.');
    if (!r.ok) tableFailure(r);
  }

  async function deleteRule(i) {
    const rules = state.table.rules.slice();
    const [gone] = rules.splice(i, 1);
    const r = await saveTable(rules, state.table.default_backend, 'Deleted ' + display(gone.id) + '.');
    if (!r.ok) tableFailure(r);
  }

  function tableFailure(r) {
    if (!state.password) return;
    renderTable(); // back to what the server has
    routesMessage(r.message, 'error');
  }

  /** The index of the rule with `id` in the (reloaded) table, or -1. */
  function indexOfId(id) {
    return state.table.rules.findIndex((r) => String(r.id) === id);
  }

  async function saveDefault(ev) {
    ev.preventDefault();
    const err = $('default-error');
    hide(err);
    const value = $('default-backend').value.trim();
    const problem = backendProblem(value);
    if (!value) {
      showText(err, 'Give a backend URL, e.g. http://127.0.0.1:6185.');
      return;
    }
    if (problem) {
      showText(err, problem);
      return;
    }
    const button = $('default-save');
    button.disabled = true;
    const r = await saveTable(state.table.rules, value, 'Default backend saved.');
    button.disabled = false;
    if (!r.ok && state.password) showText(err, r.message);
  }

  // ---------------------------------------------------------------- rule editor

  function field(name) {
    return $('f-' + name);
  }

  function openEditor(index) {
    state.editing = index;
    const rule = index >= 0 ? state.table.rules[index] : {};
    const match = rule.match && typeof rule.match === 'object' ? rule.match : {};
    $('editor-title').textContent = index >= 0 ? 'Edit rule' : 'New rule';
    field('id').value = rule.id === undefined || rule.id === null ? '' : String(rule.id);
    state.idTouched = index >= 0;
    field('priority').value = String(Number.isFinite(rule.priority) ? rule.priority : 0);
    field('action').value = rule.action === 'redirect' ? 'redirect' : 'proxy';
    field('backend').value = textOf(rule.backend);
    field('strip_prefix').checked = rule.strip_prefix === true;
    field('redirect_to').value = textOf(rule.redirect_to);
    field('redirect_to_prefix').value = textOf(rule.redirect_to_prefix);
    field('redirect_code').value = rule.redirect_code === 308 ? '308' : rule.redirect_code === 302 ? '302' : '';
    for (const key of MATCH_TEXT_KEYS) field(key).value = textOf(match[key]);

    const headers = $('header-matches');
    headers.replaceChildren();
    if (Array.isArray(match.headers)) {
      for (const h of match.headers) {
        if (!h || typeof h !== 'object') continue;
        const isRegex = h.regex !== undefined && h.regex !== null;
        headers.append(pairRow(true, textOf(h.name), isRegex ? 'regex' : 'contains', textOf(isRegex ? h.regex : h.contains)));
      }
    }
    const sets = $('set-headers');
    sets.replaceChildren();
    if (rule.set_headers && typeof rule.set_headers === 'object') {
      for (const [k, v] of Object.entries(rule.set_headers)) sets.append(pairRow(false, k, null, textOf(v)));
    }
    clearProblems();
    syncAction();
    const dialog = $('editor');
    if (!dialog.open) dialog.showModal();
    (index >= 0 ? field('priority') : field('path_prefix')).focus();
  }

  function textOf(v) {
    return v === undefined || v === null ? '' : String(v);
  }

  /** A header row: a match condition (name, contains|regex, value) or a set header (name, value). */
  function pairRow(isMatch, name, kind, value) {
    const tpl = $('pair-row');
    const row = tpl.content.firstElementChild.cloneNode(true);
    row.querySelector('.pair-name').value = name;
    row.querySelector('.pair-value').value = value;
    const select = row.querySelector('.pair-kind');
    if (isMatch) select.value = kind || 'contains';
    else select.remove();
    row.querySelector('.pair-remove').addEventListener('click', () => row.remove());
    return row;
  }

  function syncAction() {
    const redirect = field('action').value === 'redirect';
    $('proxy-fields').hidden = redirect;
    $('redirect-fields').hidden = !redirect;
  }

  /** The id a rule gets from its prefix: `/gemini/` → `gemini` (same as `stackctl routes set`). */
  function idFromPrefix(prefix) {
    const slug = prefix.toLowerCase().replace(/[^a-z0-9]+/g, '-').replace(/^-+|-+$/g, '');
    return slug || 'root';
  }

  /** The rule the form describes, starting from the edited rule so fields this page does not know survive. */
  function readForm() {
    const original = state.editing >= 0 ? state.table.rules[state.editing] : {};
    const rule = {};
    for (const [k, v] of Object.entries(original)) if (!RULE_KEYS.includes(k)) rule[k] = v;
    const match = {};
    const origMatch = original.match && typeof original.match === 'object' ? original.match : {};
    for (const [k, v] of Object.entries(origMatch)) if (!MATCH_TEXT_KEYS.includes(k) && k !== 'headers') match[k] = v;

    rule.id = field('id').value.trim();
    const prio = field('priority').value.trim();
    rule.priority = prio === '' ? 0 : Number(prio);
    rule.action = field('action').value === 'redirect' ? 'redirect' : 'proxy';
    for (const key of MATCH_TEXT_KEYS) {
      let v = field(key).value.trim();
      if (key === 'method') v = v.toUpperCase();
      if (v) match[key] = v;
    }
    const headers = [];
    for (const row of $('header-matches').querySelectorAll('.pair')) {
      const name = row.querySelector('.pair-name').value.trim();
      const value = row.querySelector('.pair-value').value;
      if (!name && !value) continue;
      const h = { name };
      h[row.querySelector('.pair-kind').value === 'regex' ? 'regex' : 'contains'] = value;
      headers.push(h);
    }
    if (headers.length) match.headers = headers;
    rule.match = match;

    // Only the fields of the chosen action are kept: what you see is what is saved.
    if (rule.action === 'proxy') {
      rule.backend = field('backend').value.trim();
      rule.strip_prefix = field('strip_prefix').checked;
      const sets = {};
      for (const row of $('set-headers').querySelectorAll('.pair')) {
        const name = row.querySelector('.pair-name').value.trim();
        const value = row.querySelector('.pair-value').value;
        if (!name && !value) continue;
        sets[name] = value;
      }
      rule.set_headers = sets;
    } else {
      rule.redirect_to = field('redirect_to').value.trim();
      rule.redirect_to_prefix = field('redirect_to_prefix').value.trim();
      const code = field('redirect_code').value;
      if (code) rule.redirect_code = Number(code);
    }
    return prune(rule);
  }

  function backendProblem(value) {
    if (!value) return null;
    if (!/^http:\/\/[^/\s@?#]+(\/[^\s]*)?$/i.test(value)) {
      return 'A backend is an http:// URL with a host and port, e.g. http://127.0.0.1:8000.';
    }
    return null;
  }

  function pathProblem(value) {
    if (!value.startsWith('/')) return 'must start with /.';
    if (value === '/admin' || value.startsWith('/admin/')) return '/admin/ is reserved for this page and its API.';
    return null;
  }

  /** Client-side checks; the server has the last word (its 400 message is shown too). */
  function validate(rule) {
    const problems = [];
    const add = (field, message) => problems.push({ field, message });
    const match = rule.match || {};
    if (!rule.id) add('id', 'Give the rule an id.');
    else if (/[\x00-\x1f\x7f]/.test(rule.id)) add('id', 'The id cannot contain control characters.');
    else if (state.table.rules.some((r, i) => i !== state.editing && String(r.id) === rule.id)) {
      add('id', 'Another rule already has the id ' + rule.id + '.');
    }
    if (!Number.isSafeInteger(rule.priority ?? 0)) add('priority', 'Priority is a whole number.');
    const conditions = MATCH_TEXT_KEYS.filter((k) => match[k] !== undefined).length + (match.headers ? match.headers.length : 0);
    if (conditions === 0) add('path_prefix', 'Give at least one match condition (usually a path prefix); the default backend takes everything else.');
    for (const key of ['path_prefix', 'path_equal']) {
      if (match[key] !== undefined) {
        const p = pathProblem(match[key]);
        if (p) add(key, FIELD_LABELS[key] + ' ' + p);
      }
    }
    if (match.method !== undefined && !/^[A-Z]+$/.test(match.method)) add('method', 'Method is a word like GET or POST.');
    if (match.host !== undefined && /[\s/]/.test(match.host)) add('host', 'Host is a name like example.org, without scheme or path.');
    for (const h of match.headers || []) {
      if (!h.name || !HEADER_NAME.test(h.name)) add('headers', 'Header condition: "' + (h.name || '') + '" is not a header name.');
      const v = h.regex !== undefined ? h.regex : h.contains;
      if (v === undefined || v === '') add('headers', 'Header condition on ' + (h.name || '?') + ' needs a value.');
    }
    if (rule.action === 'proxy') {
      if (!rule.backend) add('backend', 'A proxy rule needs a backend, e.g. http://127.0.0.1:8000.');
      else {
        const p = backendProblem(rule.backend);
        if (p) add('backend', p);
      }
      if (rule.strip_prefix && match.path_prefix === undefined) add('strip_prefix', 'Strip prefix needs a path prefix.');
      for (const [name, value] of Object.entries(rule.set_headers || {})) {
        if (!HEADER_NAME.test(name)) add('set_headers', 'Set headers: "' + name + '" is not a header name.');
        if (/[\r\n]/.test(value)) add('set_headers', 'Set headers: the value of ' + name + ' cannot contain line breaks.');
      }
    } else {
      if (!rule.redirect_to && !rule.redirect_to_prefix) add('redirect_to', 'A redirect needs a target: Redirect to, or a prefix.');
      if (rule.redirect_to && rule.redirect_to_prefix) add('redirect_to_prefix', 'Give Redirect to or a prefix, not both.');
      if (rule.redirect_to_prefix && match.path_prefix === undefined) add('redirect_to_prefix', 'Redirecting to a prefix needs a path prefix to replace.');
    }
    return problems;
  }

  function clearProblems() {
    hide($('rule-problems'));
    hide($('rule-server-error'));
    for (const node of $('rule-form').querySelectorAll('[aria-invalid]')) node.removeAttribute('aria-invalid');
  }

  function showProblems(problems) {
    const list = $('rule-problems');
    list.replaceChildren();
    for (const p of problems) {
      const target = document.getElementById('f-' + p.field);
      if (target) target.setAttribute('aria-invalid', 'true');
      list.append(el('li', { text: p.message }));
    }
    list.hidden = false;
    const first = document.getElementById('f-' + problems[0].field);
    if (first) first.focus();
  }

  async function saveRule(ev) {
    ev.preventDefault();
    clearProblems();
    const rule = readForm();
    const problems = validate(rule);
    if (problems.length) {
      showProblems(problems);
      return;
    }
    const rules = state.table.rules.slice();
    const originalId = state.editing >= 0 ? String(rules[state.editing].id) : null;
    if (state.editing >= 0) rules[state.editing] = rule;
    else rules.push(rule);
    const button = $('rule-save');
    button.disabled = true;
    const r = await saveTable(rules, state.table.default_backend, 'Saved ' + rule.id + '.');
    button.disabled = false;
    if (r.ok) {
      $('editor').close();
    } else if (state.password) {
      if (r.stale && originalId !== null) {
        // The form stays as typed; saving again applies it to the fresh table
        // (as a new rule if the edited one was removed meanwhile).
        state.editing = indexOfId(originalId);
      }
      showText($('rule-server-error'), r.stale ? 'The table changed elsewhere and has been reloaded; check your rule and save again.' : r.message);
    }
  }

  // ---------------------------------------------------------------- status

  async function loadStatus() {
    const err = $('status-error');
    let res;
    try {
      res = await api('GET', 'status');
    } catch (e) {
      showText(err, capitalise(e.message) + '.');
      return;
    }
    if (res.status === 403) {
      forbidden();
      return;
    }
    if (res.status !== 200 || !res.data || typeof res.data !== 'object') {
      showText(err, res.status === 200 ? 'The status is not JSON.' : errorMessage(res));
      return;
    }
    hide(err);
    renderStatus(res.data);
  }

  function renderStatus(data) {
    const summary = $('status-summary');
    summary.replaceChildren();
    if ('restored' in data) {
      // Without persistence nothing is restored: "yes" would claim a restore
      // that never happened. The backup API says so; older gateways leave
      // `backup` empty then.
      const off = state.persist ? state.persist.enabled !== true : (data.backup === null || data.backup === undefined);
      kv(summary, 'Restored', off ? '— (persistence is off)'
        : data.restored === true ? 'yes' : data.restored === false ? 'not yet' : display(data.restored));
    }
    for (const [k, v] of Object.entries(data)) {
      if (k === 'services' || k === 'backup' || k === 'restored') continue;
      if (v && typeof v === 'object' && !Array.isArray(v)) {
        for (const [k2, v2] of Object.entries(v)) kv(summary, humanKey(k) + ' · ' + humanKey(k2), displayValue(k2, v2));
      } else if (v !== null && v !== undefined) {
        kv(summary, humanKey(k), displayValue(k, v));
      }
    }

    const body = $('services-body');
    body.replaceChildren();
    let services = [];
    if (Array.isArray(data.services)) {
      services = data.services.filter((s) => s && typeof s === 'object').map((s) => [display(s.name), s]);
    } else if (data.services && typeof data.services === 'object') {
      services = Object.entries(data.services).filter(([, s]) => s && typeof s === 'object');
    }
    services.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
    for (const [name, s] of services) {
      const phase = typeof s.phase === 'string' ? s.phase : display(s.phase);
      const cls = KNOWN_PHASES.includes(phase) ? phase : 'other';
      body.append(el('tr', null,
        el('td', { attrs: { 'data-label': 'Service' } }, el('code', { text: name })),
        el('td', { attrs: { 'data-label': 'Phase' } }, el('span', { className: 'badge phase-' + cls, text: phase })),
        el('td', { className: 'num', attrs: { 'data-label': 'PID' }, text: display(s.pid) }),
        el('td', { className: 'num', attrs: { 'data-label': 'Restarts' }, text: display(s.restarts ?? 0) }),
        el('td', { attrs: { 'data-label': 'Last exit' }, text: display(s.last_exit) }),
      ));
    }
    if (!services.length) {
      body.append(el('tr', null, el('td', { className: 'muted', attrs: { colspan: 5 }, text: 'No services.' })));
    }

    const backup = $('backup-list');
    backup.replaceChildren();
    const b = data.backup;
    if (b === null || b === undefined) kv(backup, 'State', 'not configured');
    else if (typeof b === 'object' && !Array.isArray(b)) {
      for (const [k, v] of Object.entries(b)) kv(backup, humanKey(k), displayValue(k, v));
      if (!backup.childElementCount) kv(backup, 'State', 'no snapshot yet');
    } else kv(backup, 'State', display(b));
    // What only the backup API knows: whether changes wait, and for when.
    const p = state.persist && state.persist.enabled === true ? state.persist : null;
    if (p && isObject(p.changes)) kv(backup, 'Changes', changesText(p.changes));
    if (p && isObject(p.next_snapshot)) kv(backup, 'Next snapshot', nextText(p.next_snapshot));
  }

  function kv(list, key, value) {
    list.append(el('div', { className: 'kv-row' }, el('dt', { text: key }), el('dd', { text: value })));
  }

  function humanKey(k) {
    const s = String(k).replace(/_/g, ' ');
    return s.charAt(0).toUpperCase() + s.slice(1);
  }

  /** Unix-second timestamps (`*_at`) as local times; everything else as text. */
  function displayValue(key, value) {
    if (/(_at|_time)$/.test(key) && typeof value === 'number' && value > 1e9 && value < 1e11) {
      const d = new Date(value * 1000);
      const ago = Math.round((Date.now() - d.getTime()) / 1000);
      return d.toLocaleString() + (ago >= 0 ? ' (' + agoText(ago) + ')' : '');
    }
    if (typeof value === 'boolean') return value ? 'yes' : 'no';
    return display(value);
  }

  function agoText(s) {
    if (s < 60) return s + ' s ago';
    if (s < 3600) return Math.round(s / 60) + ' min ago';
    if (s < 86400) return Math.round(s / 3600) + ' h ago';
    return Math.round(s / 86400) + ' d ago';
  }

  // ---------------------------------------------------------------- backups

  /** The backup state first (the status card reads it), then the status. */
  async function refreshAll() {
    await loadPersist();
    await loadStatus();
  }

  function backupsMessage(text, kind) {
    const m = $('backups-message');
    m.className = 'message ' + kind;
    showText(m, text);
  }

  /** `GET persist`; renders it, follows a running operation; resolves with the state or null. */
  async function loadPersist() {
    let res;
    try {
      res = await api('GET', 'persist');
    } catch (e) {
      backupsMessage(capitalise(e.message) + '.', 'error');
      return null;
    }
    if (res.status === 403) {
      forbidden();
      return null;
    }
    if (res.status === 404) {
      state.persist = null;
      renderPersist(null);
      return null;
    }
    if (res.status !== 200 || !res.data || typeof res.data !== 'object' || Array.isArray(res.data)) {
      backupsMessage(res.status === 200 ? 'The backup state is not JSON.' : errorMessage(res), 'error');
      return null;
    }
    const wasOn = state.persist && state.persist.enabled === true;
    const wasRunning = state.persist && isObject(state.persist.running);
    state.persist = res.data;
    renderPersist(res.data);
    const on = res.data.enabled === true;
    if (on && (!wasOn || (wasRunning && !isObject(res.data.running)))) loadSnapshots(false);
    followProgress();
    return res.data;
  }

  function isObject(v) {
    return v !== null && typeof v === 'object' && !Array.isArray(v);
  }

  function shortId(id) {
    return typeof id === 'string' ? id.slice(0, 12) : display(id);
  }

  /** An RFC 3339 time as local time with how long ago; anything else as text. */
  function displayTime(value) {
    if (typeof value !== 'string') return display(value);
    const ms = Date.parse(value);
    if (!Number.isFinite(ms)) return value;
    const ago = Math.round((Date.now() - ms) / 1000);
    // The next snapshot and a lease's expiry lie ahead: "in 25 s".
    const when = ago >= 0 ? agoText(ago) : 'in ' + agoText(-ago).replace(/ ago$/, '');
    return new Date(ms).toLocaleString() + ' (' + when + ')';
  }

  function count(n, one, many) {
    return display(n) + ' ' + (n === 1 ? one : many);
  }

  /** `changes` of `GET persist`: pending or not, since when. */
  function changesText(c) {
    if (c.dirty !== true) return 'none since the last snapshot';
    return 'not snapshotted yet' + (typeof c.since === 'string' ? ', since ' + displayTime(c.since) : '');
  }

  /** `next_snapshot` of `GET persist`: the time and the rule that set it. */
  function nextText(n) {
    return displayTime(n.time) + (typeof n.reason === 'string' ? ' (' + n.reason + ')' : '');
  }

  function renderPersist(p) {
    const list = $('persist-state');
    list.replaceChildren();
    const on = !!p && p.enabled === true;
    $('backup-now').hidden = !on;
    $('snapshots-part').hidden = !on;
    if (!p) {
      kv(list, 'State', 'This gateway has no backup API (an older stackctl).');
      return;
    }
    if (!on) {
      kv(list, 'State', 'Off: add a persist: section to stack.yaml to back up the data.');
      return;
    }
    kv(list, 'Remote', display(p.remote) + (typeof p.branch === 'string' ? ' (branch ' + p.branch + ')' : ''));
    const r = isObject(p.restore) ? p.restore : {};
    const restoredText = {
      restored: 'from snapshot ' + shortId(r.snapshot),
      fresh: 'fresh start (the remote had no snapshot)',
      restoring: 'restoring' + (typeof r.progress === 'string' ? ': ' + r.progress : '…'),
      failed: 'failed',
      'kept-local': 'kept newer local data',
    }[r.state];
    if (r.state !== undefined) kv(list, 'Restored', restoredText || display(r.state));
    if (Array.isArray(r.unrestored)) for (const u of r.unrestored) kv(list, 'Not restored', display(u));
    const last = p.last_snapshot;
    if (isObject(last)) {
      kv(list, 'Last snapshot', shortId(last.id) + ' · ' + displayTime(last.time) + ' · ' + count(last.files, 'file', 'files')
        + ', ' + count(last.bytes, 'byte', 'bytes') + ' · ' + (last.pushed === true ? 'pushed' : 'queued (not pushed yet)'));
    } else if (last === null) {
      kv(list, 'Last snapshot', 'none yet');
    }
    if (typeof p.pending === 'number' && p.pending > 0) kv(list, 'Pending', count(p.pending, 'snapshot', 'snapshots') + ' not pushed yet');
    if (isObject(p.changes)) kv(list, 'Changes', changesText(p.changes));
    if (isObject(p.last_push)) {
      kv(list, 'Last push', shortId(p.last_push.snapshot)
        + (typeof p.last_push.time === 'string' ? ' · ' + displayTime(p.last_push.time) : ''));
    }
    if (p.last_error) kv(list, 'Last error', display(p.last_error));
    if (isObject(p.lease)) {
      const l = p.lease;
      let text = display(l.holder) + (typeof l.host === 'string' ? ' on ' + l.host : '') + (l.mine === true ? ' (this stack)' : '');
      for (const k of ['since', 'renewed', 'expires']) if (typeof l[k] === 'string') text += ', ' + k + ' ' + displayTime(l[k]);
      kv(list, 'Write lease', text);
    }
    if (isObject(p.large_files)) {
      kv(list, 'Large files', count(p.large_files.files, 'file', 'files') + ', ' + count(p.large_files.bytes, 'byte', 'bytes')
        + ' in ' + display(p.large_files.store));
    }
    if (isObject(p.next_snapshot)) kv(list, 'Next snapshot', nextText(p.next_snapshot));
    if (Array.isArray(p.conflicts) && p.conflicts.length) kv(list, 'Conflicts', p.conflicts.map(display).join(', '));
  }

  /** While a backup or restore runs (here or elsewhere), show its progress and poll fast. */
  function followProgress() {
    const running = state.persist && isObject(state.persist.running) ? state.persist.running : null;
    const bar = $('backups-progress');
    const dialogBar = $('restore-progress');
    clearTimeout(state.progressTimer);
    state.progressTimer = null;
    const busy = running || state.busy;
    $('backup-now').disabled = !!busy;
    for (const b of $('snapshots-body').querySelectorAll('button')) b.disabled = !!busy;
    if (!running) {
      hide(bar);
      if (!state.busy) hide(dialogBar);
      if (state.busy) state.progressTimer = setTimeout(pollProgress, PROGRESS_EVERY_MS);
      return;
    }
    const op = running.op === 'restore' ? 'Restore' : running.op === 'backup' ? 'Backup' : display(running.op);
    const text = op + ' running' + (typeof running.progress === 'string' && running.progress ? ': ' + running.progress : '…')
      + (running.started ? ' (since ' + displayTime(running.started) + ')' : '');
    showText(bar, text);
    if ($('restore-dialog').open && state.busy) showText(dialogBar, text);
    state.progressTimer = setTimeout(pollProgress, PROGRESS_EVERY_MS);
  }

  function pollProgress() {
    if (document.visibilityState === 'visible' && state.password) loadPersist();
    else state.progressTimer = setTimeout(pollProgress, PROGRESS_EVERY_MS);
  }

  /** The snapshot list: the first page again, or (`more`) the next older one. */
  async function loadSnapshots(more) {
    let path = 'persist/snapshots?limit=' + SNAPSHOT_PAGE;
    if (more && state.snapshotsNext) path += '&after=' + encodeURIComponent(state.snapshotsNext);
    let res;
    try {
      res = await api('GET', path);
    } catch (e) {
      backupsMessage(capitalise(e.message) + '.', 'error');
      return;
    }
    if (res.status === 403) {
      forbidden();
      return;
    }
    if (res.status !== 200 || !isObject(res.data) || !Array.isArray(res.data.snapshots)) {
      backupsMessage(res.status === 200 ? 'The snapshot list is not JSON.' : errorMessage(res), 'error');
      return;
    }
    const page = res.data.snapshots.filter(isObject);
    state.snapshots = more ? state.snapshots.concat(page) : page;
    state.snapshotsNext = typeof res.data.next === 'string' && page.length ? res.data.next : null;
    renderSnapshots();
  }

  function renderSnapshots() {
    const body = $('snapshots-body');
    body.replaceChildren();
    for (const s of state.snapshots) {
      const id = typeof s.id === 'string' ? s.id : '';
      const preview = el('button', {
        className: 'secondary small preview', text: 'Preview…',
        attrs: { type: 'button', 'aria-label': 'Preview restoring ' + shortId(id) },
        onClick: () => openRestore(id),
      });
      preview.disabled = !id || !!state.busy || (state.persist && isObject(state.persist.running));
      body.append(el('tr', { attrs: { 'data-snapshot': id } },
        el('td', { attrs: { 'data-label': 'Id' } }, el('code', { text: shortId(id) })),
        el('td', { attrs: { 'data-label': 'Time' }, text: displayTime(s.time) }),
        el('td', { className: 'num', attrs: { 'data-label': 'Files' }, text: display(s.files) }),
        el('td', { className: 'num', attrs: { 'data-label': 'Bytes' }, text: display(s.bytes) }),
        el('td', { attrs: { 'data-label': 'Message' } }, display(s.message),
          s.pending === true ? el('span', { className: 'muted', text: ' (not pushed yet)' }) : null),
        el('td', { className: 'row-actions', attrs: { 'data-label': '' } }, preview),
      ));
    }
    $('snapshots-empty').hidden = state.snapshots.length !== 0;
    $('snapshots-table').hidden = state.snapshots.length === 0;
    $('snapshots-more').hidden = !state.snapshotsNext;
  }

  async function backupNow() {
    hide($('backups-message'));
    state.busy = true;
    followProgress();
    let res;
    try {
      res = await api('POST', 'persist/backup', { body: {} });
    } catch (e) {
      res = null;
      backupsMessage(capitalise(e.message) + '.', 'error');
    }
    state.busy = false;
    if (res && res.status === 403) {
      forbidden();
      return;
    }
    if (res && res.status === 200) {
      const d = isObject(res.data) ? res.data : {};
      const snap = isObject(d.snapshot) ? d.snapshot : null;
      backupsMessage(d.unchanged === true || !snap ? 'Nothing changed since the last snapshot.'
        : 'Snapshot ' + shortId(snap.id) + ' taken (' + count(snap.files, 'file', 'files') + ', '
          + count(snap.bytes, 'byte', 'bytes') + ')' + (snap.pushed === true ? ' and pushed.' : '; not pushed yet.'), 'ok');
    } else if (res) {
      backupsMessage(errorMessage(res) + (res.status === 409 ? ' Wait for it to finish and try again.' : ''), 'error');
    }
    await refreshAll();
    loadSnapshots(false);
  }

  /** The restore dialog for snapshot `id`: a dry run first, then the typed confirmation. */
  async function openRestore(id) {
    state.restoring = { id, short: shortId(id) };
    $('restore-title').textContent = 'Restore snapshot ' + shortId(id);
    $('restore-id').textContent = shortId(id);
    $('restore-confirm').value = '';
    $('restore-preview').replaceChildren();
    $('restore-confirm-part').hidden = true;
    $('restore-submit').disabled = true;
    $('restore-submit').hidden = false;
    for (const n of ['restore-error', 'restore-done', 'restore-progress']) hide($(n));
    const loading = $('restore-loading');
    loading.hidden = false;
    const dialog = $('restore-dialog');
    if (!dialog.open) dialog.showModal();
    let res;
    try {
      res = await api('POST', 'persist/restore', { body: { at: id, dry_run: true } });
    } catch (e) {
      loading.hidden = true;
      showText($('restore-error'), capitalise(e.message) + '.');
      return;
    }
    loading.hidden = true;
    if (res.status === 403) {
      forbidden();
      return;
    }
    if (res.status !== 200 || !isObject(res.data)) {
      showText($('restore-error'), errorMessage(res));
      return;
    }
    if (!state.restoring || state.restoring.id !== id) return; // closed or another one opened meanwhile
    renderPreview(res.data);
    $('restore-confirm-part').hidden = false;
    $('restore-confirm').focus();
  }

  function renderPreview(plan) {
    const box = $('restore-preview');
    box.replaceChildren();
    const paths = Array.isArray(plan.paths) ? plan.paths.filter(isObject) : [];
    let total = 0;
    for (const p of paths) {
      const n = (x) => (typeof x === 'number' ? x : 0);
      total += n(p.added) + n(p.changed) + n(p.removed);
      box.append(el('p', { className: 'diff-path' }, el('code', { text: display(p.path) }), ' ',
        el('span', { className: 'muted', text: n(p.added) + ' added, ' + n(p.changed) + ' changed, ' + n(p.removed)
          + ' removed · ' + count(p.bytes, 'byte', 'bytes') })));
      const files = el('ul', { className: 'diff-files' });
      for (const f of Array.isArray(p.files) ? p.files.filter(isObject) : []) {
        const change = ['added', 'changed', 'removed'].includes(f.change) ? f.change : 'changed';
        files.append(el('li', null, el('span', { className: 'badge change-' + change, text: change }), ' ',
          el('code', { text: display(f.path) })));
      }
      if (p.truncated === true) files.append(el('li', { className: 'muted', text: '… list cut; the counts above are complete.' }));
      if (files.childElementCount) box.append(files);
    }
    if (total === 0) box.append(el('p', { className: 'muted', text: 'Nothing would change: the data equals this snapshot.' }));
  }

  function syncConfirm() {
    const r = state.restoring;
    const typed = $('restore-confirm').value.trim();
    $('restore-submit').disabled = !r || state.busy || !(typed === r.short || (typed.length >= 7 && r.id.startsWith(typed)));
  }

  async function restoreNow(ev) {
    ev.preventDefault();
    const r = state.restoring;
    syncConfirm();
    if (!r || $('restore-submit').disabled) return;
    hide($('restore-error'));
    $('restore-submit').disabled = true;
    $('restore-confirm').disabled = true;
    state.busy = true;
    showText($('restore-progress'), 'Restore running…');
    followProgress();
    let res;
    try {
      res = await api('POST', 'persist/restore', { body: { at: r.id, confirm: r.id } });
    } catch (e) {
      res = null;
      showText($('restore-error'), capitalise(e.message) + '.');
    }
    state.busy = false;
    $('restore-confirm').disabled = false;
    hide($('restore-progress'));
    if (res && res.status === 403) {
      forbidden();
      return;
    }
    if (res && res.status === 200) {
      const d = isObject(res.data) ? res.data : {};
      const names = (v) => (Array.isArray(v) ? v.map(display).join(', ') : '');
      let text = 'Restored snapshot ' + shortId(d.at || r.id) + '.';
      if (names(d.restarted)) text += ' Started again: ' + names(d.restarted) + '.';
      if (d.undo) text += ' To undo, restore snapshot ' + shortId(d.undo) + ' (taken just before).';
      showText($('restore-done'), text);
      backupsMessage(text, 'ok');
      $('restore-confirm-part').hidden = true;
      $('restore-submit').hidden = true;
      // The services were just started again: show them ready soon, not at the next 10 s tick.
      setTimeout(() => {
        if (state.password) loadStatus();
      }, 3000);
    } else if (res) {
      showText($('restore-error'), errorMessage(res));
      syncConfirm();
    }
    await refreshAll();
    loadSnapshots(false);
  }

  function closeRestore() {
    state.restoring = null;
    const dialog = $('restore-dialog');
    if (dialog.open) dialog.close();
  }

  // ---------------------------------------------------------------- password

  async function changePassword(ev) {
    ev.preventDefault();
    const err = $('password-error');
    const ok = $('password-ok');
    hide(err);
    hide(ok);
    const first = $('new-password').value;
    const second = $('new-password-2').value;
    if (first.length < MIN_PASSWORD) {
      showText(err, 'Use at least ' + MIN_PASSWORD + ' characters.');
      return;
    }
    if (!PRINTABLE_ASCII.test(first)) {
      showText(err, 'Use printable ASCII characters only (a browser cannot send others in a header).');
      return;
    }
    // The same rule as the gateway's (auth.rs, password_problem): HTTP drops
    // spaces at the ends of a header value, so such a password never matches.
    if (first !== first.trim()) {
      showText(err, 'Do not start or end the password with a space (HTTP drops it).');
      return;
    }
    if (first !== second) {
      showText(err, 'The two passwords differ.');
      return;
    }
    const button = $('password-submit');
    button.disabled = true;
    let res;
    try {
      res = await api('POST', 'password', { body: { new_password: first } });
    } catch (e) {
      button.disabled = false;
      showText(err, capitalise(e.message) + '.');
      return;
    }
    button.disabled = false;
    if (res.status === 200) {
      state.password = first;
      const st = storage();
      if (st) st.setItem(STORAGE_KEY, first);
      $('new-password').value = '';
      $('new-password-2').value = '';
      showText(ok, 'Password changed. Scripts using the old one (and the password file) need the new one.');
      loadStatus();
    } else if (res.status === 403) {
      forbidden();
    } else {
      showText(err, errorMessage(res));
    }
  }

  function capitalise(s) {
    return s ? s.charAt(0).toUpperCase() + s.slice(1) : s;
  }

  // ---------------------------------------------------------------- wiring

  function init() {
    $('login-form').addEventListener('submit', (ev) => {
      ev.preventDefault();
      login($('login-password').value, false);
    });
    $('logout').addEventListener('click', logout);
    $('reload').addEventListener('click', () => reloadTable('Reloaded.'));
    $('add-rule').addEventListener('click', () => openEditor(-1));
    $('default-form').addEventListener('submit', saveDefault);
    $('status-refresh').addEventListener('click', loadStatus);
    $('password-form').addEventListener('submit', changePassword);
    $('backups-refresh').addEventListener('click', () => refreshAll());
    $('backup-now').addEventListener('click', backupNow);
    $('snapshots-more').addEventListener('click', () => loadSnapshots(true));
    $('restore-form').addEventListener('submit', restoreNow);
    $('restore-close').addEventListener('click', closeRestore);
    $('restore-cancel').addEventListener('click', closeRestore);
    $('restore-dialog').addEventListener('close', () => {
      state.restoring = null;
    });
    $('restore-confirm').addEventListener('input', syncConfirm);

    $('rule-form').addEventListener('submit', saveRule);
    $('editor-close').addEventListener('click', () => $('editor').close());
    $('editor-cancel').addEventListener('click', () => $('editor').close());
    field('action').addEventListener('change', syncAction);
    field('id').addEventListener('input', () => {
      state.idTouched = field('id').value !== '';
    });
    field('path_prefix').addEventListener('input', () => {
      if (!state.idTouched && state.editing < 0) {
        const p = field('path_prefix').value.trim();
        field('id').value = p ? idFromPrefix(p) : '';
      }
    });
    $('add-header-match').addEventListener('click', () => {
      const row = pairRow(true, '', 'contains', '');
      $('header-matches').append(row);
      row.querySelector('.pair-name').focus();
    });
    $('add-set-header').addEventListener('click', () => {
      const row = pairRow(false, '', null, '');
      $('set-headers').append(row);
      row.querySelector('.pair-name').focus();
    });

    const st = storage();
    const saved = st ? st.getItem(STORAGE_KEY) : null;
    if (saved) login(saved, true);
    else $('login-password').focus();
  }

  init();
})();
