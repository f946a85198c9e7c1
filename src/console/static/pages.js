// The console's pages: locked users, user lookup, settings, activity. Each action is shown only
// when the token holds its permission (`can`); the server checks it again on every request.
import { h } from 'preact';
import { useEffect, useRef, useState } from 'preact/hooks';
import htm from 'htm';
import uPlot from 'uplot';
import { ApiError } from './api.js';

export const html = htm.bind(h);

const PAGE_SIZE = 25;
const MAX_SETTING = 4294967295;
const FACTORS = [
  { key: 'password', label: 'Password', limit: 'maxPasswordAttempts' },
  { key: 'totp', label: 'TOTP', limit: 'maxOtpAttempts' },
  { key: 'otpSms', label: 'SMS code', limit: 'maxOtpAttempts' },
  { key: 'otpEmail', label: 'Email code', limit: 'maxOtpAttempts' },
  { key: 'recoveryCode', label: 'Recovery code', limit: 'maxOtpAttempts' },
];

/** A readable line for an error of the API. */
export function errorText(error) {
  if (error instanceof ApiError) {
    if (error.status === 403) return `Not allowed: ${error.message}`;
    if (error.status === 503) return 'The lockout store is unavailable; try again shortly.';
    return error.message;
  }
  return 'The request failed (network error).';
}

const when = (iso) => (iso ? new Date(iso).toLocaleString() : '—');

/** A confirmation dialog (a modal <dialog>: focus stays inside, Escape cancels). */
function Confirm({ title, body, action, onConfirm, onCancel }) {
  const ref = useRef(null);
  useEffect(() => {
    const dialog = ref.current;
    if (dialog && !dialog.open) dialog.showModal();
    return () => dialog && dialog.open && dialog.close();
  }, []);
  return html`<dialog
    ref=${ref}
    aria-labelledby="confirm-title"
    onCancel=${(e) => {
      e.preventDefault();
      onCancel();
    }}
  >
    <h2 id="confirm-title">${title}</h2>
    <p>${body}</p>
    <div class="actions">
      <button type="button" class="secondary" onClick=${onCancel}>Cancel</button>
      <button type="button" class="danger" onClick=${onConfirm} autofocus>${action}</button>
    </div>
  </dialog>`;
}

/** Runs `task` on each item, at most `limit` at a time; answers the results in order. */
async function eachLimited(items, limit, task) {
  const out = new Array(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      try {
        out[i] = { ok: true, value: await task(items[i]) };
      } catch (error) {
        out[i] = { ok: false, error };
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return out;
}

function counters(status) {
  if (!status) return '…';
  const f = status.failedAttempts;
  return `pw ${f.password} · totp ${f.totp} · sms ${f.otpSms} · email ${f.otpEmail} · rec ${f.recoveryCode}`;
}

// ---- locked users -------------------------------------------------------------------------

export function LockedUsersPage({ client, can }) {
  const [cursors, setCursors] = useState([undefined]); // cursor of each page seen
  const [page, setPage] = useState({ users: [], nextCursor: undefined, loading: true });
  const [statuses, setStatuses] = useState({});
  const [filter, setFilter] = useState('');
  const [selected, setSelected] = useState(new Set());
  const [confirm, setConfirm] = useState(null);
  const [message, setMessage] = useState('');
  const [error, setError] = useState('');
  const cursor = cursors[cursors.length - 1];

  const load = async () => {
    setError('');
    try {
      const answer = await client.lockouts(PAGE_SIZE, cursor);
      setPage({ users: answer.users, nextCursor: answer.nextCursor, loading: false });
      setSelected(new Set());
      const results = await eachLimited(answer.users, 6, (u) => client.status(u.userId));
      const next = {};
      answer.users.forEach((u, i) => {
        if (results[i].ok) next[u.userId] = results[i].value;
      });
      setStatuses(next);
    } catch (e) {
      setPage({ users: [], loading: false });
      setError(errorText(e));
    }
  };
  useEffect(() => {
    load();
  }, [cursor]);

  const shown = page.users.filter((u) => u.userId.toLowerCase().includes(filter.trim().toLowerCase()));
  const writable = can('user.write');

  const unlock = async (ids) => {
    setConfirm(null);
    setError('');
    setMessage('');
    const results = await eachLimited(ids, 4, (id) => client.unlock(id));
    // Not locked any more (400 code 9: unlocked meanwhile, by someone else or a lock that ended):
    // the row goes as for an unlock.
    const gone = (r) => r.ok || (r.error instanceof ApiError && r.error.code === 9);
    const done = ids.filter((_id, i) => gone(results[i]));
    const failed = ids
      .map((id, i) => (gone(results[i]) ? null : `${id}: ${errorText(results[i].error)}`))
      .filter(Boolean);
    setPage((p) => ({ ...p, users: p.users.filter((u) => !done.includes(u.userId)) }));
    setSelected((s) => new Set([...s].filter((id) => !done.includes(id))));
    if (done.length > 0)
      setMessage(done.length === 1 ? `Unlocked ${done[0]}.` : `Unlocked ${done.length} users.`);
    if (failed.length > 0) setError(`Not unlocked: ${failed.join('; ')}`);
  };

  const toggle = (id) =>
    setSelected((s) => {
      const n = new Set(s);
      if (n.has(id)) n.delete(id);
      else n.add(id);
      return n;
    });
  const allShownSelected = shown.length > 0 && shown.every((u) => selected.has(u.userId));

  return html`<section aria-labelledby="locked-title">
    <h1 id="locked-title">Locked users</h1>
    <div class="toolbar">
      <label
        >Filter this page by user id
        <input type="search" value=${filter} onInput=${(e) => setFilter(e.currentTarget.value)}
      /></label>
      <button type="button" class="secondary" onClick=${load}>Refresh</button>
      ${
        writable &&
        html`<button
          type="button"
          class="danger"
          disabled=${selected.size === 0}
          onClick=${() =>
            setConfirm({
              ids: [...selected],
              title: `Unlock ${selected.size} users?`,
              body: `Unlocks ${[...selected].join(', ')} and resets all their failure counters.`,
            })}
        >
          Unlock selected (${selected.size})
        </button>`
      }
    </div>
    <p class="status" role="status" aria-live="polite">${message}</p>
    <p class="error" role="alert">${error}</p>
    ${
      page.loading
        ? html`<p>Loading…</p>`
        : page.users.length === 0
          ? html`<p class="empty">Nobody is locked in this organization${cursor ? ' on this page' : ''}.</p>`
          : shown.length === 0
            ? html`<p class="empty">
                No locked user on this page matches. The filter reads this page only:
                <a href=${`#user/${encodeURIComponent(filter.trim())}`}>look up ${filter.trim()}</a>.
              </p>`
            : html`<table class="locked">
                <caption class="sr-only">
                  Locked users, page ${cursors.length}
                </caption>
                <thead>
                  <tr>
                    ${
                      writable &&
                      html`<th scope="col">
                        <input
                          type="checkbox"
                          aria-label="Select every user shown"
                          checked=${allShownSelected}
                          onChange=${() =>
                            setSelected(allShownSelected ? new Set() : new Set(shown.map((u) => u.userId)))}
                        />
                      </th>`
                    }
                    <th scope="col">User</th>
                    <th scope="col">Failure counters</th>
                    <th scope="col">Locked since</th>
                    <th scope="col">Scope</th>
                    ${writable && html`<th scope="col"><span class="sr-only">Actions</span></th>`}
                  </tr>
                </thead>
                <tbody>
                  ${shown.map((u) => {
                    const status = statuses[u.userId];
                    return html`<tr key=${u.userId} data-user=${u.userId}>
                      ${
                        writable &&
                        html`<td>
                          <input
                            type="checkbox"
                            aria-label=${`Select ${u.userId}`}
                            checked=${selected.has(u.userId)}
                            onChange=${() => toggle(u.userId)}
                          />
                        </td>`
                      }
                      <th scope="row"><a href=${`#user/${encodeURIComponent(u.userId)}`}>${u.userId}</a></th>
                      <td>${counters(status)}</td>
                      <td>
                        <time datetime=${u.lockedAt}>${when(u.lockedAt)}</time>
                        ${
                          status && status.lockedUntil
                            ? html`<br /><small>until ${when(status.lockedUntil)}</small>`
                            : null
                        }
                      </td>
                      <td>${status && status.scope ? String(status.scope) : 'user'}</td>
                      ${
                        writable &&
                        html`<td>
                          <button
                            type="button"
                            class="danger"
                            aria-label=${`Unlock ${u.userId}`}
                            onClick=${() =>
                              setConfirm({
                                ids: [u.userId],
                                title: `Unlock ${u.userId}?`,
                                body: 'Unlocks the user and resets all their failure counters.',
                              })}
                          >
                            Unlock
                          </button>
                        </td>`
                      }
                    </tr>`;
                  })}
                </tbody>
              </table>`
    }
    <nav class="pager" aria-label="Locked users pagination">
      <button
        type="button"
        class="secondary"
        disabled=${cursors.length === 1}
        onClick=${() => setCursors((c) => c.slice(0, -1))}
      >
        Previous page
      </button>
      <span>Page ${cursors.length}</span>
      <button
        type="button"
        class="secondary"
        disabled=${!page.nextCursor}
        onClick=${() => setCursors((c) => [...c, page.nextCursor])}
      >
        Next page
      </button>
    </nav>
    ${
      confirm &&
      html`<${Confirm}
        title=${confirm.title}
        body=${confirm.body}
        action="Unlock"
        onConfirm=${() => unlock(confirm.ids)}
        onCancel=${() => setConfirm(null)}
      />`
    }
  </section>`;
}

// ---- user lookup --------------------------------------------------------------------------

function userFromHash() {
  const m = /^#user\/(.+)$/.exec(location.hash);
  return m ? decodeURIComponent(m[1]) : '';
}

/** Who did it, in words: a token's name, a JWT's subject, an app's principal, or lockgate. */
function actorText(actor) {
  if (!actor || actor.type === 'system') return 'lockgate';
  if (actor.type === 'token') return `token ${actor.name}`;
  if (actor.type === 'jwt') return `JWT ${actor.subject}`;
  return actor.name || actor.type;
}

/** The events API's answer ({ events: [...] }, newest first) as a list. */
function Events({ events }) {
  const list = events && Array.isArray(events.events) ? events.events : [];
  if (list.length === 0) return html`<p>No recent events.</p>`;
  return html`<ol class="events">
    ${list.map((e) => {
      const data = Object.entries(e.data || {})
        .map(([k, v]) => `${k}: ${typeof v === 'object' ? JSON.stringify(v) : v}`)
        .join(', ');
      return html`<li>
        <time datetime=${e.time}>${when(e.time)}</time>
        <strong>${e.type}</strong>${` by ${actorText(e.actor)}${data ? ` (${data})` : ''}`}
      </li>`;
    })}
  </ol>`;
}

export function UserPage({ client, can }) {
  const [userId, setUserId] = useState(userFromHash());
  const [draft, setDraft] = useState(userFromHash());
  const [status, setStatus] = useState(null);
  const [events, setEvents] = useState(undefined); // undefined: not read; null: no events API
  const [message, setMessage] = useState('');
  const [error, setError] = useState('');
  const [confirm, setConfirm] = useState(null);

  const load = async (id) => {
    setError('');
    if (!id) return;
    try {
      setStatus(await client.status(id));
      setEvents(await client.userEvents(id).catch(() => null));
    } catch (e) {
      setStatus(null);
      setError(errorText(e));
    }
  };
  useEffect(() => {
    load(userId);
  }, [userId]);
  useEffect(() => {
    const onHash = () => {
      const id = userFromHash();
      if (id) {
        setDraft(id);
        setUserId(id);
      }
    };
    addEventListener('hashchange', onHash);
    return () => removeEventListener('hashchange', onHash);
  }, []);

  const act = async (label, run) => {
    setConfirm(null);
    setError('');
    setMessage('');
    try {
      await run(userId);
      setMessage(label);
      await load(userId);
    } catch (e) {
      setError(errorText(e));
    }
  };
  const locked = status && status.state === 'USER_STATE_LOCKED';
  const limitText = (n) => (n === '0' ? 'never locks' : n);

  return html`<section aria-labelledby="user-title">
    <h1 id="user-title">User lookup</h1>
    <form
      class="toolbar"
      onSubmit=${(e) => {
        e.preventDefault();
        const id = draft.trim();
        if (id) {
          setUserId(id);
          history.replaceState(null, '', `#user/${encodeURIComponent(id)}`);
          if (id === userId) load(id);
        }
      }}
    >
      <label
        >User id
        <input name="userId" value=${draft} onInput=${(e) => setDraft(e.currentTarget.value)} required
      /></label>
      <button type="submit">Look up</button>
    </form>
    <p class="status" role="status" aria-live="polite">${message}</p>
    <p class="error" role="alert">${error}</p>
    ${
      status &&
      html`<div class="user">
        <h2>${status.userId}</h2>
        <dl>
          <dt>State</dt>
          <dd>
            <span class=${locked ? 'badge locked' : 'badge active'}>${locked ? 'Locked' : 'Active'}</span>
          </dd>
          ${
            locked &&
            html`<dt>Locked since</dt>
              <dd>${when(status.lockedAt)}</dd>`
          }
          ${
            status.lockedUntil &&
            html`<dt>Locked until</dt>
              <dd>${when(status.lockedUntil)}</dd>`
          }
          ${
            status.scope &&
            html`<dt>Lock scope</dt>
              <dd>${String(status.scope)}</dd>`
          }
          ${
            status.inFlight !== undefined &&
            html`<dt>Attempts in flight</dt>
              <dd>${String(status.inFlight)}</dd>`
          }
          <dt>Settings</dt>
          <dd>${status.settings.isDefault ? 'Inherited from instance' : 'Custom for this organization'}</dd>
        </dl>
        <table>
          <caption>
            Failed attempts against the effective limits
          </caption>
          <thead>
            <tr>
              <th scope="col">Factor</th>
              <th scope="col">Failed</th>
              <th scope="col">Limit</th>
            </tr>
          </thead>
          <tbody>
            ${FACTORS.map(
              (f) =>
                html`<tr>
                  <th scope="row">${f.label}</th>
                  <td>${status.failedAttempts[f.key]}</td>
                  <td>${limitText(status.settings[f.limit])}</td>
                </tr>`,
            )}
          </tbody>
        </table>
        ${
          can('user.write') &&
          html`<div class="actions">
            ${
              locked
                ? html`<button
                    type="button"
                    class="danger"
                    onClick=${() =>
                      setConfirm({
                        title: `Unlock ${userId}?`,
                        body: 'Unlocks the user and resets all their failure counters.',
                        action: 'Unlock',
                        run: () => act(`Unlocked ${userId}.`, client.unlock),
                      })}
                  >
                    Unlock
                  </button>`
                : html`<button
                    type="button"
                    class="danger"
                    onClick=${() =>
                      setConfirm({
                        title: `Lock ${userId}?`,
                        body: 'Every check of this user is refused until an admin unlocks them.',
                        action: 'Lock',
                        run: () => act(`Locked ${userId}.`, client.lock),
                      })}
                  >
                    Lock
                  </button>`
            }
            <button
              type="button"
              class="secondary"
              onClick=${() => act(`Password counter of ${userId} reset.`, client.passwordChanged)}
            >
              Password changed
            </button>
          </div>`
        }
        ${
          events !== null &&
          events !== undefined &&
          html`<section aria-labelledby="events-title">
            <h3 id="events-title">Recent events</h3>
            <${Events} events=${events} />
          </section>`
        }
      </div>`
    }
    ${
      confirm &&
      html`<${Confirm}
        title=${confirm.title}
        body=${confirm.body}
        action=${confirm.action}
        onConfirm=${confirm.run}
        onCancel=${() => setConfirm(null)}
      />`
    }
  </section>`;
}

// ---- settings -----------------------------------------------------------------------------

/** The problem with a settings value typed in a form, or ''. */
function settingProblem(value) {
  if (!/^[0-9]+$/.test(value.trim())) return 'Enter a whole number (0 = never lock).';
  if (Number(value) > MAX_SETTING) return `At most ${MAX_SETTING}.`;
  return '';
}

function SettingsForm({ id, policy, canWrite, onSave, extra, saveLabel }) {
  const [values, setValues] = useState({
    maxPasswordAttempts: policy.maxPasswordAttempts,
    maxOtpAttempts: policy.maxOtpAttempts,
  });
  const [touched, setTouched] = useState(false);
  useEffect(() => {
    setValues({ maxPasswordAttempts: policy.maxPasswordAttempts, maxOtpAttempts: policy.maxOtpAttempts });
    setTouched(false);
  }, [policy]);
  const problems = {
    maxPasswordAttempts: settingProblem(values.maxPasswordAttempts),
    maxOtpAttempts: settingProblem(values.maxOtpAttempts),
  };
  const field = (name, label) =>
    html`<div class="field">
      <label for=${`${id}-${name}`}>${label}</label>
      <input
        id=${`${id}-${name}`}
        name=${name}
        inputmode="numeric"
        value=${values[name]}
        readonly=${!canWrite}
        aria-invalid=${touched && problems[name] ? 'true' : 'false'}
        aria-describedby=${`${id}-${name}-error`}
        onInput=${(e) => {
          setTouched(true);
          setValues({ ...values, [name]: e.currentTarget.value });
        }}
      />
      <span id=${`${id}-${name}-error`} class="error">${touched ? problems[name] : ''}</span>
    </div>`;
  return html`<form
    novalidate
    onSubmit=${(e) => {
      e.preventDefault();
      setTouched(true);
      if (problems.maxPasswordAttempts || problems.maxOtpAttempts) return;
      onSave({
        maxPasswordAttempts: values.maxPasswordAttempts.trim(),
        maxOtpAttempts: values.maxOtpAttempts.trim(),
      });
    }}
  >
    ${field('maxPasswordAttempts', 'Password attempts before lock')}
    ${field('maxOtpAttempts', 'One-time code attempts before lock')}
    <div class="actions">
      ${canWrite && html`<button type="submit" aria-label=${saveLabel}>Save</button>`} ${extra}
    </div>
  </form>`;
}

export function SettingsPage({ client, can, org }) {
  const [orgSettings, setOrgSettings] = useState(null);
  const [instance, setInstance] = useState(null);
  const [message, setMessage] = useState('');
  const [error, setError] = useState('');
  const [confirm, setConfirm] = useState(false);

  const load = async () => {
    try {
      setOrgSettings(await client.orgSettings());
      if (can('iam.policy.read')) setInstance(await client.instanceSettings());
    } catch (e) {
      setError(errorText(e));
    }
  };
  useEffect(() => {
    load();
  }, []);

  const run = async (label, action) => {
    setError('');
    setMessage('');
    setConfirm(false);
    try {
      await action();
      setMessage(label);
      await load();
    } catch (e) {
      setError(
        e instanceof ApiError && e.code === 9
          ? 'Nothing to save: the values are the same as now.'
          : errorText(e),
      );
    }
  };

  const inherited = orgSettings && orgSettings.isDefault;
  return html`<section aria-labelledby="settings-title">
    <h1 id="settings-title">Settings</h1>
    <p class="status" role="status" aria-live="polite">${message}</p>
    <p class="error" role="alert">${error}</p>
    ${
      orgSettings &&
      html`<section class="card" aria-labelledby="org-settings-title">
        <h2 id="org-settings-title">Lockout of ${org}</h2>
        <p data-testid="org-source">
          ${
            inherited
              ? html`<span class="badge inherited">Inherited from instance</span> This organization has no
                  settings of its own; saving gives it its own.`
              : html`<span class="badge custom">Custom</span> This organization has its own settings.`
          }
        </p>
        <${SettingsForm}
          id="org"
          saveLabel="Save organization settings"
          policy=${orgSettings.policy}
          canWrite=${can('policy.write')}
          onSave=${(values) =>
            run(
              'Organization settings saved.',
              inherited ? () => client.addOrgSettings(values) : () => client.updateOrgSettings(values),
            )}
          extra=${
            !inherited &&
            can('policy.delete') &&
            html`<button type="button" class="secondary" onClick=${() => setConfirm(true)}>
              Reset to default
            </button>`
          }
        />
      </section>`
    }
    ${
      instance &&
      html`<section class="card" aria-labelledby="instance-settings-title">
        <h2 id="instance-settings-title">Instance defaults</h2>
        <p>Every organization without settings of its own uses these.</p>
        <${SettingsForm}
          id="instance"
          saveLabel="Save instance defaults"
          policy=${instance.policy}
          canWrite=${can('iam.policy.write')}
          onSave=${(values) => run('Instance settings saved.', () => client.updateInstanceSettings(values))}
        />
      </section>`
    }
    ${
      confirm &&
      html`<${Confirm}
        title="Reset to the instance defaults?"
        body=${`${org} drops its own settings and uses the instance's.`}
        action="Reset"
        onConfirm=${() => run('Organization settings reset to the instance defaults.', client.resetOrgSettings)}
        onCancel=${() => setConfirm(false)}
      />`
    }
  </section>`;
}

// ---- activity -----------------------------------------------------------------------------

const SERIES = [
  { key: 'failures', label: 'Failed checks', stroke: '#b3261e' },
  { key: 'locks', label: 'Locks', stroke: '#1f5fad' },
  { key: 'unlocks', label: 'Unlocks', stroke: '#1b7a3a' },
];

export function ActivityPage({ client }) {
  const [minutes, setMinutes] = useState(180);
  const [data, setData] = useState(null);
  const [error, setError] = useState('');
  const chartRef = useRef(null);

  const load = async () => {
    setError('');
    try {
      setData(await client.activity(minutes));
    } catch (e) {
      // A window shorter than asked (the server's): ask again for 60 minutes.
      if (e instanceof ApiError && e.status === 400 && minutes !== 60) setMinutes(60);
      else setError(errorText(e));
    }
  };
  useEffect(() => {
    load();
    const timer = setInterval(load, 30_000);
    return () => clearInterval(timer);
  }, [minutes]);

  useEffect(() => {
    const el = chartRef.current;
    if (!el || !data) return undefined;
    const xs = data.minutes.map((m) => Date.parse(m.start) / 1000);
    const columns = [xs, ...SERIES.map((s) => data.minutes.map((m) => m[s.key]))];
    const plot = new uPlot(
      {
        width: Math.max(320, el.clientWidth || 800),
        height: 300,
        scales: { y: { range: (_u, _min, max) => [0, Math.max(5, max)] } },
        series: [{}, ...SERIES.map((s) => ({ label: s.label, stroke: s.stroke, width: 2 }))],
        axes: [{}, { label: 'per minute' }],
      },
      columns,
      el,
    );
    return () => plot.destroy();
  }, [data]);

  const totals = data
    ? SERIES.map((s) => ({ ...s, total: data.minutes.reduce((t, m) => t + m[s.key], 0) }))
    : [];
  return html`<section aria-labelledby="activity-title">
    <h1 id="activity-title">Activity</h1>
    <div class="toolbar">
      <label
        >Window
        <select value=${String(minutes)} onChange=${(e) => setMinutes(Number(e.currentTarget.value))}>
          <option value="60">Last hour</option>
          <option value="180">Last 3 hours</option>
        </select></label
      >
      <button type="button" class="secondary" onClick=${load}>Refresh</button>
    </div>
    <p class="error" role="alert">${error}</p>
    <p class="help">
      Per minute, counted by the lockgate process that answers (each process of a fleet counts its own; a
      restart starts from zero).
    </p>
    <figure>
      <div
        ref=${chartRef}
        class="chart"
        role="img"
        aria-label="Failed checks, locks and unlocks per minute"
      ></div>
      <figcaption>
        <ul class="totals">
          ${totals.map(
            (t) =>
              html`<li data-series=${t.key}>
                <span class=${`swatch ${t.key}`}></span>${t.label}: <strong>${t.total}</strong>
              </li>`,
          )}
        </ul>
      </figcaption>
    </figure>
  </section>`;
}
