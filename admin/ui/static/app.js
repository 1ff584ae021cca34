// Admin page of API tokens for Caddy. Plain JavaScript, no framework and no
// build step. Every piece of server data reaches the page through
// textContent or a form value, never through HTML parsing, so a user name or
// token name can never become markup.
'use strict';

// The page lives at <prefix>/ui/ and the API at <prefix>/, wherever Caddy
// mounts the admin handler (e.g. handle_path /api-tokens/*).
const API_BASE = location.pathname.slice(0, location.pathname.lastIndexOf('/ui/') + 1);

// The login's temporary token lives only as long as the browser tab. Its
// id (not secret) marks this session in the token list.
const TOKEN_KEY = 'api-tokens.token';
const SESSION_ID_KEY = 'api-tokens.session-id';

const SETTING_LABELS = {
  EnableUserTokenNotification: 'Enable User Token Notification',
  UserTokenExpirationNotificationEmails: 'User Token Expiration Notification Emails',
};
const SETTING_HINTS = {
  EnableUserTokenNotification: 'Days before expiry when a fault is raised, from 1 to 365. A list like 30;7;1 sends a reminder at each.',
  UserTokenExpirationNotificationEmails: 'Email addresses to notify, separated by semicolons, e.g. ops@example.com;dev@example.com.',
};
const TYPE_LABELS = { AppConfig: 'App Config' };

const $ = (id) => document.getElementById(id);

// me is the logged-in user, or null before login.
let me = null;

// catalogue is the gateway's scopes, [{name, description}], read again
// whenever a page with scope checkboxes opens (a config reload may change
// it), so that the forms on it open at once.
let catalogue = [];

// A scope is "unused" when no request needed it for this long.
const UNUSED_DAYS = 30;
const DAY_MS = 24 * 60 * 60 * 1000;

// serverSkew is how far the server's clock (its Date header) runs ahead of
// the browser's. Token times are the server's, so "unused for 30 days" is
// judged by its clock, not by a browser clock that may be wrong.
let serverSkew = 0;
const serverNow = () => Date.now() + serverSkew;

// ---- API --------------------------------------------------------------

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

// api calls the admin REST API and returns the parsed JSON (null for 204).
// A failure throws ApiError carrying the server's {"error"} message. A 401
// ends the session and shows the login form; callers still see the error.
async function api(method, path, body) {
  return (await send(method, API_BASE + path, path, body)).data;
}

// apiList reads a whole list (users, a user's tokens): the API answers a
// page at a time, with a Link header to the next page until the last.
async function apiList(path) {
  const items = [];
  let url = API_BASE + path;
  while (url) {
    const { data, res } = await send('GET', url, path);
    items.push(...data);
    url = nextPage(res);
  }
  return items;
}

// nextPage returns the URL of the next page from an answer's
// Link: <...>; rel="next" header, or null on the last page. The token goes
// with every request, so a link to another site is refused.
function nextPage(res) {
  const m = /<([^<>]*)>\s*;\s*rel="?next"?/.exec(res.headers.get('Link') || '');
  if (!m) return null;
  const url = new URL(m[1], res.url);
  if (url.origin !== location.origin) {
    throw new ApiError(0, 'The server sent a link to another site for the rest of the list; it was not followed.');
  }
  return url.href;
}

// send makes one request to url (path names it for the login check) and
// returns the parsed JSON and the response.
async function send(method, url, path, body) {
  const headers = { Accept: 'application/json' };
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers.Authorization = 'Bearer ' + token;
  const init = { method, headers, cache: 'no-store', credentials: 'omit' };
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(url, init);
  } catch {
    throw new ApiError(0, 'The server cannot be reached. Check the connection and try again.');
  }
  const date = Date.parse(res.headers.get('Date') || '');
  if (!isNaN(date)) serverSkew = date - Date.now();
  const text = await res.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { /* not JSON: use the status below */ }
  if (res.ok) return { data, res };

  const message = data && typeof data.error === 'string' ? data.error : 'The request failed (HTTP ' + res.status + ').';
  if (res.status === 401 && path !== 'login') {
    endSession('Your session has ended: ' + message + '. Please log in again.');
  }
  throw new ApiError(res.status, message);
}

const enc = encodeURIComponent;

// ---- DOM helpers ------------------------------------------------------

// h builds an element. props sets attributes (text sets textContent);
// children are nodes or strings, and strings always become text nodes.
function h(tag, props, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(props || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name === 'text') node.textContent = value;
    else if (name === 'onclick') node.addEventListener('click', value);
    else node.setAttribute(name, value === true ? '' : value);
  }
  node.append(...children.filter((c) => c !== null && c !== undefined));
  return node;
}

function button(label, onclick, props) {
  return h('button', { type: 'button', onclick, ...props }, label);
}

// spaced puts a space between inline controls, so their text reads apart
// (for copy and paste, and for innerText) and not only looks apart.
function spaced(nodes) {
  return nodes.flatMap((node, i) => (i ? [' ', node] : [node]));
}

// emptyRow fills a table body with one full-width row of text.
function emptyRow(tbody, columns, text) {
  tbody.replaceChildren(h('tr', {}, h('td', { colspan: columns, class: 'empty', text })));
}

// fmtTime shows RFC 3339 times in UTC, the server's zone, minute precision.
function fmtTime(value, none) {
  if (!value) return none || '—';
  const d = new Date(value);
  if (isNaN(d)) return value;
  return d.toISOString().slice(0, 16).replace('T', ' ') + ' UTC';
}

// timeCell shows a time as fmtTime does, in a table cell that a narrow
// column wraps between the date and the time of day, never inside them.
function timeCell(value, none) {
  const text = fmtTime(value, none);
  const at = text.indexOf(' ');
  if (at < 0) return h('td', { text });
  return h('td', {}, h('span', { class: 'nobr', text: text.slice(0, at) }), ' ', h('span', { class: 'nobr', text: text.slice(at + 1) }));
}

const capitalize = (s) => (s ? s[0].toUpperCase() + s.slice(1) : '');

// wordList shows scope names or CIDRs as words, or none when there are none.
const wordList = (words, none) => (words && words.length ? words.join(' ') : none);

// renderScopeChoices fills container with a checkbox per scope of the
// catalogue, named by the scope and described by its description. The
// names in checked are ticked; only those in allowed can be changed (null:
// all), so a form cannot offer what the server would refuse.
function renderScopeChoices(container, checked, allowed) {
  if (!catalogue.length) {
    container.replaceChildren(h('p', { class: 'hint', text: 'This gateway declares no scopes.' }));
    return;
  }
  container.replaceChildren(...catalogue.map((scope, i) => {
    const id = container.id + '-' + i;
    const held = !allowed || allowed.includes(scope.name);
    const description = scope.description + (held ? '' : ' (the user does not hold it)');
    return h('div', { class: 'scope-choice' },
      h('input', { type: 'checkbox', id, value: scope.name, checked: checked.includes(scope.name),
        disabled: !held, 'aria-describedby': id + '-description' }),
      h('label', { for: id, text: scope.name }),
      h('span', { id: id + '-description', class: 'hint', text: description }));
  }));
}

// chosenScopes returns the names ticked in a container of scope checkboxes.
function chosenScopes(container) {
  return [...container.querySelectorAll('input[type=checkbox]:checked')].map((box) => box.value);
}

// parseNetworks splits typed CIDRs at spaces, commas and line breaks;
// nothing typed is [] (any network). The server checks each and says what
// is wrong with it.
function parseNetworks(text) {
  return text.split(/[\s,]+/).filter(Boolean);
}

function showError(message) {
  $('page-status').textContent = '';
  $('page-error').textContent = message;
}

function showStatus(message) {
  $('page-error').textContent = '';
  $('page-status').textContent = message;
}

function clearMessages() {
  $('page-error').textContent = '';
  $('page-status').textContent = '';
}

// guard runs a page action and shows its failure at the top of the page.
async function guard(action) {
  try {
    await action();
  } catch (err) {
    if (err.status !== 401) showError(err.message);
  }
}

// ---- Dialogs ----------------------------------------------------------

// openForm shows a modal form dialog. onSubmit gets the form; if it throws,
// the error is shown inside the dialog and the dialog stays open. If it
// returns a function, that runs once the dialog has closed.
function openForm(dialog, onSubmit) {
  const form = dialog.querySelector('form');
  const error = dialog.querySelector('.error');
  error.textContent = '';
  form.onsubmit = async (event) => {
    event.preventDefault();
    const submit = form.querySelector('button[type=submit]');
    submit.disabled = true;
    error.textContent = '';
    try {
      const after = await onSubmit(form);
      dialog.close();
      if (typeof after === 'function') after();
    } catch (err) {
      if (err.status === 401) dialog.close();
      else error.textContent = err.message;
    } finally {
      submit.disabled = false;
    }
  };
  dialog.showModal();
}

// confirmAction asks before a destructive action; it resolves to true only
// when the person presses the confirm button.
function confirmAction(text, okLabel) {
  const dialog = $('dlg-confirm');
  $('confirm-text').textContent = text;
  $('confirm-ok').textContent = okLabel;
  return new Promise((resolve) => {
    let ok = false;
    dialog.querySelector('form').onsubmit = (event) => {
      event.preventDefault();
      ok = true;
      dialog.close();
    };
    dialog.addEventListener('close', () => resolve(ok), { once: true });
    dialog.showModal();
    $('confirm-ok').focus();
  });
}

// showSecret shows a new token's secret, once, with what it may do.
function showSecret(title, created) {
  const dialog = $('dlg-secret');
  $('dlg-secret-title').textContent = title;
  $('secret-value').value = created.token;
  $('secret-facts').replaceChildren(
    h('dt', { text: 'Scopes' }), h('dd', { text: wordList(created.scopes, 'none') }),
    h('dt', { text: 'Allowed networks' }), h('dd', { text: wordList(created.allowed_cidrs, 'any') }));
  $('secret-status').textContent = '';
  dialog.showModal();
  $('secret-value').select();
}

async function copySecret() {
  const input = $('secret-value');
  try {
    await navigator.clipboard.writeText(input.value);
  } catch {
    // Clipboard API refused (e.g. no permission): copy the selection instead.
    input.select();
    if (!document.execCommand('copy')) {
      $('secret-status').textContent = 'Copying failed: select the token and copy it by hand.';
      return;
    }
  }
  $('secret-status').textContent = 'Copied to the clipboard.';
}

// ---- Session ----------------------------------------------------------

async function login(event) {
  event.preventDefault();
  const form = event.target;
  const error = $('login-error');
  error.textContent = '';
  try {
    const res = await api('POST', 'login', {
      username: form.username.value.trim(),
      password: form.password.value,
    });
    sessionStorage.setItem(TOKEN_KEY, res.token);
    sessionStorage.setItem(SESSION_ID_KEY, res.id);
    me = res.user;
    form.reset();
    startSession();
    // Back to the page asked for (a bookmark, or where an expired session
    // left off), else the home page; hashchange routes.
    if (location.hash.length > 2) route();
    else location.hash = me.admin ? '#/users' : '#/me';
  } catch (err) {
    error.textContent = err.message;
  }
}

async function logout() {
  try {
    await api('POST', 'logout');
  } catch {
    // The token may already be dead; logging out locally is what matters.
  }
  endSession('You are logged out.');
}

function startSession() {
  $('whoami').textContent = me.username + (me.admin ? ' (administrator)' : '');
  $('session').hidden = false;
  $('nav').hidden = false;
  for (const item of document.querySelectorAll('[data-admin-only]')) item.hidden = !me.admin;
}

// endSession forgets the token and shows the login form with a message.
function endSession(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  sessionStorage.removeItem(SESSION_ID_KEY);
  me = null;
  for (const dialog of document.querySelectorAll('dialog[open]')) dialog.close();
  $('session').hidden = true;
  $('nav').hidden = true;
  showView('login');
  showStatus(message);
  $('login-username').focus();
}

// ---- Routing ----------------------------------------------------------

function showView(name) {
  for (const view of document.querySelectorAll('.view')) view.hidden = view.id !== 'view-' + name;
}

function markNav(name) {
  for (const link of document.querySelectorAll('[data-nav]')) {
    if (link.dataset.nav === name) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
}

// route shows the page named by the URL fragment: #/users, #/users/NAME,
// #/users/NAME/tokens, #/me, #/settings, #/faults.
async function route() {
  clearMessages();
  if (!sessionStorage.getItem(TOKEN_KEY)) {
    showView('login');
    $('login-username').focus();
    return;
  }
  const parts = location.hash.replace(/^#\/?/, '').split('/').map(decodeURIComponent);
  const admin = me && me.admin;
  let page = parts[0] || (admin ? 'users' : 'me');
  if (!admin && page !== 'me') page = 'me'; // non-admins have only their own page
  markNav(page === 'users' && parts[1] ? 'users' : page);
  await guard(async () => {
    if (page === 'users' && parts[1]) await showUser(parts[1], parts[2] === 'tokens' ? 'tokens' : 'profile');
    else if (page === 'users') await showUsers();
    else if (page === 'settings') await showSettings();
    else if (page === 'faults') await showFaults();
    else await showUser(me.username, parts[1] === 'tokens' ? 'tokens' : 'profile');
  });
}

// focusHeading moves keyboard and screen reader focus to the new page.
function focusHeading(id) {
  $(id).focus();
}

// ---- Users ------------------------------------------------------------

async function showUsers() {
  const [users, scopes] = await Promise.all([apiList('users'), api('GET', 'scopes')]);
  catalogue = scopes;
  renderUsers(users);
  showView('users');
  focusHeading('users-title');
}

async function reloadUsers() {
  renderUsers(await apiList('users'));
}

function renderUsers(users) {
  const body = $('users-body');
  if (!users.length) return emptyRow(body, 6, 'No users.');
  body.replaceChildren(...users.map((u) => {
    const self = u.username === me.username;
    const actions = self ? [h('span', { class: 'hint', text: 'you' })] : [
      button(u.disabled ? 'Enable' : 'Disable', () => setDisabled(u, !u.disabled),
        { class: 'secondary small', 'aria-label': (u.disabled ? 'Enable ' : 'Disable ') + u.username }),
      button('Delete', () => deleteUser(u), { class: 'danger small', 'aria-label': 'Delete ' + u.username }),
    ];
    return h('tr', {},
      h('th', { scope: 'row' }, h('a', { href: '#/users/' + enc(u.username), text: u.username })),
      h('td', { text: u.email || '—' }),
      h('td', { text: u.admin ? 'Administrator' : 'User' }),
      h('td', {}, h('span', { class: 'badge ' + (u.disabled ? 'off' : 'ok'), text: u.disabled ? 'Disabled' : 'Active' })),
      h('td', { text: fmtTime(u.created_at) }),
      h('td', { class: 'actions' }, ...spaced(actions)));
  }));
}

function addUser() {
  const dialog = $('dlg-user');
  dialog.querySelector('form').reset();
  renderScopeChoices($('user-scopes'), [], null);
  openForm(dialog, async (form) => {
    const user = await api('POST', 'users', {
      username: form.username.value.trim(),
      email: form.email.value.trim(),
      password: form.password.value,
      admin: form.admin.checked,
      scopes: chosenScopes($('user-scopes')),
    });
    await reloadUsers();
    showStatus('User ' + user.username + ' created.');
  });
}

async function setDisabled(user, disabled) {
  await guard(async () => {
    await api('PATCH', 'users/' + enc(user.username), { disabled });
    await reloadUsers();
    showStatus('User ' + user.username + (disabled ? ' disabled: their tokens stop working.' : ' enabled.'));
  });
}

async function deleteUser(user) {
  const sure = await confirmAction('Delete user ' + user.username + '? All their tokens stop working at once.', 'Delete');
  if (!sure) return;
  await guard(async () => {
    await api('DELETE', 'users/' + enc(user.username));
    await reloadUsers();
    showStatus('User ' + user.username + ' deleted.');
  });
}

// ---- One user: profile and tokens -------------------------------------

// shown is the user whose page is open.
let shown = null;

async function showUser(username, tab) {
  const [user, tokens, scopes] = await Promise.all([
    api('GET', 'users/' + enc(username)),
    apiList('users/' + enc(username) + '/tokens'),
    // Only administrators get forms with scope checkboxes.
    me.admin ? api('GET', 'scopes') : [],
  ]);
  shown = user;
  catalogue = scopes;
  const self = username === me.username;
  $('user-title').textContent = self ? 'My profile' : user.username;
  $('user-back').hidden = !me.admin;
  $('token-add').hidden = !me.admin; // only administrators create permanent tokens
  renderProfile(user);
  if (me.admin) renderUserScopes(user);
  renderTokens(tokens);
  // Users change their own password; administrators anyone's. One's own
  // needs the current one too (a stolen session alone must not do it).
  $('password-form').hidden = !(self || me.admin);
  $('current-password-field').hidden = !self;
  $('current-password').required = self;
  showView('user');
  selectTab($(tab === 'tokens' ? 'tab-tokens' : 'tab-profile'), false);
  focusHeading('user-title');
}

function renderProfile(user) {
  const facts = [
    ['Username', user.username],
    ['Email', user.email || '—'],
    ['Role', user.admin ? 'Administrator' : 'User'],
    ['Status', user.disabled ? 'Disabled' : 'Active'],
    ['Created', fmtTime(user.created_at)],
    ['Scopes', user.admin ? 'Every scope (administrator)' : wordList(user.scopes, 'None')],
  ];
  $('profile').replaceChildren(...facts.flatMap(([term, value]) => [h('dt', { text: term }), h('dd', { text: value })]));
}

// renderUserScopes fills the form that sets the user's scopes: the most
// their tokens may carry.
function renderUserScopes(user) {
  $('scopes-hint').textContent = user.admin
    ? 'Administrators hold every scope; these count only if ' + user.username + ' stops being one.'
    : 'The most the tokens of ' + user.username + ' may carry. Taking a scope away here takes it from all of them at once.';
  renderScopeChoices($('profile-scopes'), user.scopes, null);
  $('scopes-form').querySelector('.error').textContent = '';
}

async function saveUserScopes(event) {
  event.preventDefault();
  const form = event.target;
  const error = form.querySelector('.error');
  const submit = form.querySelector('button[type=submit]');
  error.textContent = '';
  submit.disabled = true;
  try {
    shown = await api('PATCH', 'users/' + enc(shown.username), { scopes: chosenScopes($('profile-scopes')) });
    renderProfile(shown);
    renderUserScopes(shown);
    await reloadTokens(); // their scopes the user no longer holds are marked
    showStatus('Scopes of ' + shown.username + ' saved.');
  } catch (err) {
    if (err.status !== 401) error.textContent = err.message;
  } finally {
    submit.disabled = false;
  }
}

async function reloadTokens() {
  renderTokens(await apiList('users/' + enc(shown.username) + '/tokens'));
}

function tokenStatus(t) {
  let text = capitalize(t.status);
  if (t.status === 'active' && t.revoked_at) text += ' until ' + fmtTime(t.revoked_at);
  return h('span', { class: 'badge ' + (t.status === 'active' ? 'ok' : 'off'), text });
}

// tokenLabel names a token, and marks the login session this page uses.
function tokenLabel(t) {
  if (t.kind === 'temporary' && t.id === sessionStorage.getItem(SESSION_ID_KEY)) return 'This session';
  return t.name || 'Login session';
}

// unusedScopes returns the token's scopes that no request needed in the
// last 30 days. A token younger than that has had no fair chance to use
// them, so none of its scopes count as unused.
function unusedScopes(t) {
  const since = serverNow() - UNUSED_DAYS * DAY_MS;
  if (!(Date.parse(t.created_at) < since)) return [];
  return t.scopes.filter((name) => {
    const use = t.scope_usage && Object.hasOwn(t.scope_usage, name) ? t.scope_usage[name] : {};
    return !(use.last_needed_at && Date.parse(use.last_needed_at) >= since);
  });
}

// userHolds reports whether the user shown holds a scope: a token's
// scope that its user no longer holds does not work (its effective
// scopes are its own within its user's).
function userHolds(name) {
  return shown.admin || (shown.scopes || []).includes(name);
}

// scopesCell lists the token's scopes, marks those unused for 30 days
// and, for an administrator, offers to remove one or all unused ones.
// The scopes it lacked on shadow routes follow: those routes will refuse
// it once they enforce.
function scopesCell(t, label, narrowable) {
  const unused = unusedScopes(t);
  const usage = t.scope_usage || {};
  const items = t.scopes.map((name) => {
    const use = Object.hasOwn(usage, name) ? usage[name] : {};
    return h('li', { title: use.last_needed_at ? 'Last needed ' + fmtTime(use.last_needed_at) : 'Never needed by a request' },
      ...spaced([
        h('code', { text: name }),
        unused.includes(name) && h('span', { class: 'badge warn', text: 'unused 30 d' }),
        !userHolds(name) && h('span', { class: 'badge', title: 'Taken from the user: the token cannot use it', text: 'not held by user' }),
        narrowable && button('remove', () => removeScopes(t, [name]),
          { class: 'link', 'aria-label': 'Remove scope ' + name + ' from ' + label }),
      ].filter(Boolean)));
  });
  const missing = Object.keys(usage).sort()
    .filter((name) => !t.scopes.includes(name) && usage[name].last_missing_at)
    .map((name) => h('code', { title: 'Last missing ' + fmtTime(usage[name].last_missing_at), text: name }));
  const cell = h('td', {}, items.length ? h('ul', { class: 'plain' }, ...items) : h('span', { class: 'hint', text: 'none' }));
  if (missing.length) {
    cell.append(h('span', { class: 'sub' }, 'Missing on shadow routes: ', ...spaced(missing)));
  }
  if (narrowable && unused.length) {
    cell.append(button('Remove unused scopes', () => removeScopes(t, unused),
      { class: 'secondary small', 'aria-label': 'Remove unused scopes from ' + label }));
  }
  return cell;
}

// networksCell lists where the token may be used from, with an Edit
// button for an administrator.
function networksCell(t, label, narrowable) {
  const cidrs = t.allowed_cidrs || [];
  return h('td', {}, ...spaced([
    cidrs.length ? h('ul', { class: 'plain' }, ...cidrs.map((c) => h('li', {}, h('code', { text: c })))) : 'any',
    narrowable && button('Edit', () => editNetworks(t, label),
      { class: 'secondary small', 'aria-label': 'Edit allowed networks of ' + label }),
  ].filter(Boolean)));
}

// lastUsedCell shows when the token was last used, and from where.
function lastUsedCell(t) {
  const cell = timeCell(t.last_used_at, 'Never');
  if (t.last_used_ip) cell.append(h('span', { class: 'sub', text: 'from ' + t.last_used_ip }));
  return cell;
}

function renderTokens(tokens) {
  const body = $('tokens-body');
  if (!tokens.length) return emptyRow(body, 9, 'No tokens yet.');
  body.replaceChildren(...tokens.map((t) => {
    const label = tokenLabel(t);
    const actions = [];
    // An administrator may rotate and narrow a permanent token in use;
    // one replaced by a rotation only has its grace period left.
    const current = me.admin && t.kind === 'permanent' && t.status === 'active' && !t.rotated_to;
    if (current) {
      actions.push(button('Rotate', () => rotateToken(t), { class: 'secondary small', 'aria-label': 'Rotate ' + label }));
    }
    // Rotation leaves two rows with one name; the expiry tells them apart.
    actions.push(button('Revoke', () => revokeToken(t),
      { class: 'danger small', 'aria-label': 'Revoke ' + label + ', expires ' + fmtTime(t.expires_at) }));
    return h('tr', {},
      h('th', { scope: 'row', text: label }),
      h('td', { text: capitalize(t.kind) }),
      scopesCell(t, label, current),
      networksCell(t, label, current),
      timeCell(t.created_at),
      timeCell(t.expires_at),
      lastUsedCell(t),
      h('td', {}, tokenStatus(t)),
      h('td', { class: 'actions' }, ...spaced(actions)));
  }));
}

// dateToExpiry turns a yyyy-mm-dd date input into the end of that day, UTC.
function dateToExpiry(value) {
  return value ? value + 'T23:59:59Z' : undefined;
}

function addToken() {
  const dialog = $('dlg-token');
  dialog.querySelector('form').reset();
  // Ticked: what the token would get by default, the user's scopes (an
  // administrator's: every scope); only those may be given.
  const ceiling = shown.admin ? catalogue.map((scope) => scope.name) : shown.scopes;
  renderScopeChoices($('token-scopes'), ceiling, shown.admin ? null : shown.scopes);
  openForm(dialog, async () => {
    const body = {
      name: $('token-name').value.trim(),
      scopes: chosenScopes($('token-scopes')),
      allowed_cidrs: parseNetworks($('token-cidrs').value),
    };
    const expires = dateToExpiry($('token-expires').value);
    if (expires) body.expires_at = expires;
    const created = await api('POST', 'users/' + enc(shown.username) + '/tokens', body);
    await reloadTokens();
    return () => showSecret('Token ' + created.name + ' created', created);
  });
}

function rotateToken(t) {
  const dialog = $('dlg-rotate');
  dialog.querySelector('form').reset();
  $('rotate-text').textContent = 'Token ' + t.name + ' gets a new secret and a fresh expiry.';
  openForm(dialog, async (form) => {
    const body = form.grace.value ? { grace: form.grace.value } : {};
    const rotated = await api('POST', 'users/' + enc(shown.username) + '/tokens/' + enc(t.id) + '/rotate', body);
    await reloadTokens();
    return () => showSecret('Token ' + rotated.name + ' rotated', rotated);
  });
}

// removeScopes takes names away from a token, after asking: a scope
// cannot be given back, only a new token can carry it. It narrows the
// token as the server has it now, not as this page last saw it.
async function removeScopes(t, names) {
  const label = tokenLabel(t);
  const which = (names.length === 1 ? 'scope ' : 'scopes ') + names.join(', ');
  const question = 'Remove ' + which + ' from ' + label + '? Requests that need ' +
    (names.length === 1 ? 'it' : 'them') + ' are refused at once; only a new token can have ' +
    (names.length === 1 ? 'it' : 'them') + ' again.';
  if (!(await confirmAction(question, 'Remove'))) return;
  await guard(async () => {
    const path = 'users/' + enc(shown.username) + '/tokens/' + enc(t.id);
    const current = await api('GET', path);
    await api('PATCH', path, { scopes: current.scopes.filter((name) => !names.includes(name)) });
    showStatus('Token ' + label + ' no longer has ' + which + '.');
    await reloadTokens();
  });
}

function editNetworks(t, label) {
  const dialog = $('dlg-networks');
  dialog.querySelector('form').reset();
  $('networks-text').textContent = 'Token ' + label + ' is refused from addresses outside these networks.';
  $('networks-cidrs').value = (t.allowed_cidrs || []).join(' ');
  openForm(dialog, async () => {
    const cidrs = parseNetworks($('networks-cidrs').value);
    const path = 'users/' + enc(shown.username) + '/tokens/' + enc(t.id);
    const updated = await api('PATCH', path, { allowed_cidrs: cidrs });
    await reloadTokens();
    showStatus('Token ' + label + ' may be used from ' + wordList(updated.allowed_cidrs, 'any network') + '.');
  });
}

async function revokeToken(t) {
  const label = tokenLabel(t);
  const current = t.id === sessionStorage.getItem(SESSION_ID_KEY);
  const question = current ? 'Revoke this session? You will be logged out.'
    : 'Revoke ' + label + '? Anything using it is refused at once.';
  if (!(await confirmAction(question, 'Revoke'))) return;
  await guard(async () => {
    await api('DELETE', 'users/' + enc(shown.username) + '/tokens/' + enc(t.id));
    if (current) return endSession('You are logged out.');
    showStatus('Token ' + label + ' revoked.');
    await reloadTokens();
  });
}

async function changePassword(event) {
  event.preventDefault();
  const form = event.target;
  const error = form.querySelector('.error');
  error.textContent = '';
  try {
    const change = { password: $('new-password').value };
    if (shown.username === me.username) change.current_password = $('current-password').value;
    await api('PATCH', 'users/' + enc(shown.username), change);
    form.reset();
    showStatus('Password of ' + shown.username + ' changed.');
  } catch (err) {
    if (err.status !== 401) error.textContent = err.message;
  }
}

// ---- Tabs (WAI-ARIA tabs pattern: arrow keys move between tabs) --------

function selectTab(tab, focus) {
  const list = tab.closest('[role=tablist]');
  for (const other of list.querySelectorAll('[role=tab]')) {
    const selected = other === tab;
    other.setAttribute('aria-selected', String(selected));
    other.tabIndex = selected ? 0 : -1;
    $(other.getAttribute('aria-controls')).hidden = !selected;
  }
  if (focus) tab.focus();
  if (tab.id === 'tab-tokens' || tab.id === 'tab-profile') {
    // Keep the address bookmarkable without triggering a reload.
    const base = location.hash.replace(/\/tokens$/, '');
    history.replaceState(null, '', tab.id === 'tab-tokens' ? base + '/tokens' : base);
  }
}

function tabKeys(event) {
  const tabs = [...event.currentTarget.querySelectorAll('[role=tab]')];
  const i = tabs.indexOf(document.activeElement);
  if (i < 0) return;
  const next = { ArrowRight: i + 1, ArrowLeft: i - 1, Home: 0, End: tabs.length - 1 }[event.key];
  if (next === undefined) return;
  event.preventDefault();
  selectTab(tabs[(next + tabs.length) % tabs.length], true);
}

// ---- System Settings -> Config ---------------------------------------

async function showSettings() {
  renderSettings(await api('GET', 'settings'));
  showView('settings');
  selectTab($('tab-config'), false);
  focusHeading('settings-title');
}

function renderSettings(settings) {
  const body = $('config-body');
  if (!settings.length) return emptyRow(body, 4, 'No config yet: token expiry notifications are off.');
  body.replaceChildren(...settings.map((s) => {
    const label = SETTING_LABELS[s.key] || s.key;
    return h('tr', {},
      h('td', { text: TYPE_LABELS[s.type] || s.type }),
      h('th', { scope: 'row' }, label, h('span', { class: 'key', text: s.key })),
      h('td', { class: 'value', text: s.value }),
      h('td', { class: 'actions' }, ...spaced([
        button('Edit', () => editSetting(s), { class: 'secondary small', 'aria-label': 'Edit ' + label }),
        button('Delete', () => deleteSetting(s), { class: 'danger small', 'aria-label': 'Delete ' + label }),
      ])));
  }));
}

function updateValueHint() {
  $('config-value-hint').textContent = SETTING_HINTS[$('config-key').value] || '';
}

// editSetting opens the config form: empty to add, filled in to edit.
function editSetting(existing) {
  const dialog = $('dlg-config');
  const key = $('config-key');
  const value = $('config-value');
  dialog.querySelector('form').reset();
  $('dlg-config-title').textContent = existing ? 'Edit config' : 'Add config';
  key.disabled = Boolean(existing); // a key is edited in place, not renamed
  if (existing) {
    key.value = existing.key;
    value.value = existing.value;
  }
  updateValueHint();
  openForm(dialog, async () => {
    await api('PUT', 'settings/' + enc(key.value), { value: value.value });
    renderSettings(await api('GET', 'settings'));
    showStatus((SETTING_LABELS[key.value] || key.value) + ' saved.');
  });
}

async function deleteSetting(s) {
  const label = SETTING_LABELS[s.key] || s.key;
  const sure = await confirmAction('Delete ' + label + '?', 'Delete');
  if (!sure) return;
  await guard(async () => {
    await api('DELETE', 'settings/' + enc(s.key));
    renderSettings(await api('GET', 'settings'));
    showStatus(label + ' deleted.');
  });
}

// ---- Faults -----------------------------------------------------------

async function showFaults() {
  const faults = await api('GET', 'faults');
  const body = $('faults-body');
  $('faults-summary').textContent = faults.length
    ? faults.length + (faults.length === 1 ? ' permanent token needs' : ' permanent tokens need') +
      ' attention: create a new token for its user, switch the automation to it, then revoke the old one.'
    : 'No faults: no permanent token is near expiry.';
  if (!faults.length) emptyRow(body, 6, 'None.');
  else body.replaceChildren(...faults.map((f) => h('tr', {},
    h('td', { text: f.user }),
    h('th', { scope: 'row' }, h('a', { href: '#/users/' + enc(f.user) + '/tokens', text: f.token_name })),
    h('td', {}, h('span', { class: 'badge ' + (f.state === 'expired' ? 'off' : 'warn'), text: capitalize(f.state) })),
    h('td', { text: fmtTime(f.expires_at) }),
    h('td', { class: 'number', text: String(f.days_left) }),
    h('td', { text: fmtTime(f.raised_at) }))));
  showView('faults');
  focusHeading('faults-title');
}

// ---- Start ------------------------------------------------------------

async function start() {
  $('login-form').addEventListener('submit', login);
  $('password-form').addEventListener('submit', changePassword);
  $('logout').addEventListener('click', logout);
  $('user-add').addEventListener('click', addUser);
  $('token-add').addEventListener('click', addToken);
  $('scopes-form').addEventListener('submit', saveUserScopes);
  $('config-add').addEventListener('click', () => editSetting(null));
  $('config-key').addEventListener('change', updateValueHint);
  $('secret-copy').addEventListener('click', copySecret);
  $('dlg-secret').addEventListener('close', () => { $('secret-value').value = ''; });
  for (const closer of document.querySelectorAll('[data-close]')) {
    closer.addEventListener('click', () => closer.closest('dialog').close());
  }
  for (const list of document.querySelectorAll('[role=tablist]')) {
    list.addEventListener('keydown', tabKeys);
    list.addEventListener('click', (event) => {
      const tab = event.target.closest('[role=tab]');
      if (tab) selectTab(tab, true);
    });
  }
  window.addEventListener('hashchange', route);

  if (sessionStorage.getItem(TOKEN_KEY)) {
    try {
      me = await api('GET', 'me');
      startSession();
    } catch (err) {
      if (err.status !== 401) showError(err.message);
      return;
    }
  }
  await route();
}

start();
