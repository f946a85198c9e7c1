// The console's shell: sign-in, the org picker, the navigation and the pages (pages.js).
import { render } from 'preact';
import { useEffect, useState } from 'preact/hooks';
import { ApiError, createClient, session } from './api.js';
import { ActivityPage, LockedUsersPage, SettingsPage, UserPage, errorText, html } from './pages.js';

const PAGES = [
  { id: 'locked', title: 'Locked users', needs: 'user.read', Page: LockedUsersPage },
  { id: 'user', title: 'User lookup', needs: 'user.read', Page: UserPage },
  { id: 'settings', title: 'Settings', needs: 'policy.read', Page: SettingsPage },
  { id: 'activity', title: 'Activity', needs: 'user.read', Page: ActivityPage },
];

function pageFromHash() {
  const id = location.hash.replace(/^#\/?/, '').split('/')[0];
  return PAGES.some((p) => p.id === id) ? id : 'locked';
}

function SignIn({ onSignedIn, error }) {
  const [token, setToken] = useState('');
  const [busy, setBusy] = useState(false);
  const [message, setMessage] = useState(error || '');
  const submit = async (event) => {
    event.preventDefault();
    const value = token.trim();
    if (!value) {
      setMessage('Enter a token.');
      return;
    }
    setBusy(true);
    setMessage('');
    try {
      const me = await createClient(value, undefined).me();
      onSignedIn(value, me);
    } catch (e) {
      setMessage(e instanceof ApiError && e.status === 401 ? 'This token is not accepted.' : errorText(e));
      setBusy(false);
    }
  };
  return html`<main class="signin" id="main">
    <h1>lockgate console</h1>
    <form onSubmit=${submit} aria-describedby="signin-help">
      <label for="token">Token</label>
      <input
        id="token"
        name="token"
        type="password"
        autocomplete="off"
        spellcheck="false"
        value=${token}
        onInput=${(e) => setToken(e.currentTarget.value)}
        aria-invalid=${message ? 'true' : 'false'}
        aria-errormessage="signin-error"
        required
      />
      <p id="signin-help" class="help">
        A lockgate token (the one <code>npm start</code> prints, or one of <code>auth.tokens</code>) or an
        access token (JWT) of the configured identity provider. It is kept in this tab only and sent in the
        Authorization header.
      </p>
      <p id="signin-error" class="error" role="alert">${message}</p>
      <button type="submit" disabled=${busy}>Sign in</button>
    </form>
  </main>`;
}

function OrgPicker({ me, org, onChange }) {
  const [draft, setDraft] = useState(org);
  useEffect(() => setDraft(org), [org]);
  if (Array.isArray(me.orgs)) {
    return html`<label class="org"
      >Organization
      <select value=${org} onChange=${(e) => onChange(e.currentTarget.value)}>
        ${me.orgs.map((o) => html`<option value=${o}>${o}</option>`)}
      </select></label
    >`;
  }
  // Every org (`*`), or an authorizer that does not tell: the org id is typed.
  return html`<form
    class="org"
    onSubmit=${(e) => {
      e.preventDefault();
      if (draft.trim()) onChange(draft.trim());
    }}
  >
    <label for="org-input">Organization</label>
    <input id="org-input" value=${draft} onInput=${(e) => setDraft(e.currentTarget.value)} />
    <button type="submit">Switch</button>
  </form>`;
}

function Console({ token, initialMe, onSignOut }) {
  const [org, setOrg] = useState(initialMe.orgId);
  const [me, setMe] = useState(initialMe);
  const [page, setPage] = useState(pageFromHash());
  const [error, setError] = useState('');
  // A token revoked (or expired) since sign-in: back to the sign-in form, saying why.
  const client = createClient(token, org, () =>
    onSignOut('Your token is no longer accepted; sign in again.'),
  );

  useEffect(() => {
    const onHash = () => setPage(pageFromHash());
    addEventListener('hashchange', onHash);
    return () => removeEventListener('hashchange', onHash);
  }, []);

  const switchOrg = async (next) => {
    setError('');
    try {
      const nextMe = await createClient(token, next).me();
      setMe(nextMe);
      setOrg(next);
      session.save(token, next);
    } catch (e) {
      setError(`Cannot switch to ${next}: ${errorText(e)}`);
    }
  };

  const can = (permission) => me.permissions.includes(permission);
  const visible = PAGES.filter((p) => can(p.needs));
  const current = visible.find((p) => p.id === page) ?? visible[0];
  return html`<div class="shell">
    <a class="skip" href="#main">Skip to content</a>
    <header>
      <span class="brand">lockgate</span>
      <nav aria-label="Pages">
        <ul>
          ${visible.map(
            (p) =>
              html`<li>
                <a href=${`#${p.id}`} aria-current=${current && p.id === current.id ? 'page' : undefined}
                  >${p.title}</a
                >
              </li>`,
          )}
        </ul>
      </nav>
      <${OrgPicker} me=${me} org=${org} onChange=${switchOrg} />
      <span class="who" title="Signed in as">${me.principal}</span>
      <button type="button" class="secondary" onClick=${onSignOut}>Sign out</button>
    </header>
    <p class="error" role="alert">${error}</p>
    <main id="main" tabindex="-1">
      ${
        current
          ? html`<${current.Page} key=${`${current.id}:${org}`} client=${client} can=${can} org=${org} />`
          : html`<p>This token holds no permission the console uses on ${org}.</p>`
      }
    </main>
  </div>`;
}

function App() {
  const [state, setState] = useState({ phase: 'loading' });
  useEffect(() => {
    const token = session.token();
    if (!token) {
      setState({ phase: 'signin' });
      return;
    }
    createClient(token, session.org() || undefined)
      .me()
      .then((me) => setState({ phase: 'in', token, me }))
      .catch(() => {
        session.clear();
        setState({ phase: 'signin', error: 'Your session ended; sign in again.' });
      });
  }, []);
  if (state.phase === 'loading') return html`<p class="loading">Loading…</p>`;
  if (state.phase === 'signin') {
    return html`<${SignIn}
      error=${state.error}
      onSignedIn=${(token, me) => {
        session.save(token, me.orgId);
        setState({ phase: 'in', token, me });
      }}
    />`;
  }
  return html`<${Console}
    token=${state.token}
    initialMe=${state.me}
    onSignOut=${(reason) => {
      session.clear();
      setState({ phase: 'signin', error: typeof reason === 'string' ? reason : undefined });
    }}
  />`;
}

render(html`<${App} />`, document.getElementById('app'));
