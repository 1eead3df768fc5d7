// The page: a header with the snapshot picker, the views and the theme switch; the view itself
// below. Everything the view shows follows from the URL.
import { useEffect, useState } from "preact/hooks";
import { AccessContext, EVERYTHING, listing, rootOf, tops } from "./access";
import { api, setToken, token, type Access } from "./api";
import { Compare } from "./Compare";
import { ErrorBox, Link, Loading } from "./components";
import { useApi } from "./data";
import { Explorer } from "./Explorer";
import { bytes, count, dateSeconds } from "./format";
import { within, type PathRef } from "./paths";
import { Reports } from "./Reports";
import { navigate, pathOf, pathPatch, useRoute, view as viewOf, type View } from "./route";
import { Search } from "./Search";
import { Console } from "./Console";

const TABS: [View, string][] = [
  ["explorer", "Explorer"],
  ["search", "Search"],
  ["reports", "Reports"],
  ["compare", "Compare"],
  ["console", "Console"],
];

type Theme = "light" | "dark";
const THEME_KEY = "storage-tracker-theme";

function initialTheme(): Theme {
  const saved = localStorage.getItem(THEME_KEY);
  if (saved === "light" || saved === "dark") return saved;
  return matchMedia("(prefers-color-scheme: dark)").matches ? "dark" : "light";
}

function ThemeSwitch() {
  const [theme, setTheme] = useState<Theme>(initialTheme);
  useEffect(() => {
    document.documentElement.dataset.theme = theme;
  }, [theme]);
  const next: Theme = theme === "dark" ? "light" : "dark";
  return (
    <button
      type="button"
      class="theme"
      aria-pressed={theme === "dark"}
      title={`Switch to the ${next} theme`}
      onClick={() => {
        localStorage.setItem(THEME_KEY, next);
        setTheme(next);
      }}
    >
      {theme === "dark" ? "☀ Light" : "☾ Dark"}
    </button>
  );
}

function TokenForm({ onSaved, rejected }: { onSaved: () => void; rejected: boolean }) {
  return (
    <form
      class="token"
      onSubmit={(e) => {
        e.preventDefault();
        setToken(((new FormData(e.target as HTMLFormElement).get("token") as string) ?? "").trim());
        onSaved();
      }}
    >
      {rejected ? (
        <p class="error" role="alert">
          That token was not accepted. Check it and paste it again.
        </p>
      ) : null}
      <p>This storage-tracker asks for a token. Paste the one your administrator gave you; it is kept for this tab only.</p>
      <label>
        Token <input name="token" type="password" autoComplete="off" required size={40} />
      </label>{" "}
      <button type="submit">Use it</button>
    </form>
  );
}

function GoTo({ path }: { path: PathRef }) {
  return (
    <form
      class="goto"
      role="search"
      aria-label="Go to a directory"
      onSubmit={(e) => {
        e.preventDefault();
        const p = ((new FormData(e.target as HTMLFormElement).get("goto") as string) ?? "").trim();
        if (p) navigate({ ...pathPatch({ text: p.length > 1 ? p.replace(/\/+$/, "") : p }), offset: null });
      }}
    >
      <input name="goto" aria-label="Directory" placeholder={path.text} key={path.text} size={28} />
      <button type="submit">Go</button>
    </form>
  );
}

export function App() {
  const q = useRoute();
  const [generation, setGeneration] = useState(0);
  const [unauthorized, setUnauthorized] = useState(false);
  const [rejected, setRejected] = useState(false);
  useEffect(() => {
    const f = () => {
      // A token that was sent and refused is forgotten, so the prompt asks again.
      if (token()) {
        setToken("");
        setRejected(true);
      }
      setUnauthorized(true);
    };
    window.addEventListener("storage-tracker:unauthorized", f);
    return () => window.removeEventListener("storage-tracker:unauthorized", f);
  }, []);
  // First what the token may read, then the snapshots it may see.
  const granted = useApi(api.access(), generation);
  // Asked without a token, the API says whether it needs one: then the prompt, no failed request.
  const needsToken = granted.data?.token_required === true && granted.data.name === null;
  const access: Access | undefined = needsToken ? undefined : (granted.data ?? (granted.error?.status === 404 ? EVERYTHING : undefined));
  const list = useApi(access ? api.snapshots({ limit: 1000 }) : null, generation);
  const snapshots = list.data?.snapshots ?? [];
  const view = viewOf(q);
  const wanted = Number(q.get("snapshot"));
  const snapshot = snapshots.find((s) => s.snapshot_id === wanted) ?? snapshots[0];
  const scope = access ?? EVERYTHING;
  const snapRoot: PathRef | undefined = snapshot ? rootOf(snapshot) : undefined;
  // Where the token reads from in this snapshot: the root, or its own prefixes.
  const reach = snapshot ? tops(snapshot, scope) : [];
  const home = reach[0] ?? snapRoot;
  const path = home ? pathOf(q, home) : undefined;
  const top = path ? reach.find((t) => within(path, t)) : undefined;
  const manyRoots = new Set(snapshots.map((s) => `${s.filesystem_label}\u0000${s.root_path_b64 ?? s.root_path}`)).size > 1;

  useEffect(() => {
    const title = path ? `${path.text} · storage-tracker` : "storage-tracker";
    document.title = view === "explorer" ? title : `${TABS.find(([v]) => v === view)?.[1]} · ${title}`;
  });

  const signedIn = () => {
    setUnauthorized(false);
    setRejected(false);
    setGeneration((g) => g + 1);
  };

  const header = (
    <header class="top">
      <h1>
        <a href="?" onClick={(e) => (e.preventDefault(), navigate({ view: null, path: null, path_b64: null, offset: null }))}>
          storage-tracker
        </a>
      </h1>
      {snapshots.length ? (
        <label class="picker">
          Snapshot{" "}
          <select
            value={snapshot ? String(snapshot.snapshot_id) : ""}
            onChange={(e) => {
              const next = snapshots.find((s) => s.snapshot_id === Number((e.target as HTMLSelectElement).value));
              if (!next) return;
              // Keep the directory when the new snapshot covers it and the token reads it there.
              const keep = path && within(path, rootOf(next)) && tops(next, scope).some((t) => within(path, t));
              navigate({ snapshot: next.snapshot_id, ...(keep ? {} : { path: null, path_b64: null }), offset: null });
            }}
          >
            {snapshots.map((s) => (
              <option key={s.snapshot_id} value={String(s.snapshot_id)}>
                #{s.snapshot_id} {s.filesystem_label}
                {manyRoots ? ` ${s.root_path}` : ""} · {dateSeconds(s.started_at)}
              </option>
            ))}
          </select>
        </label>
      ) : null}
      <nav class="tabs" aria-label="Views">
        {TABS.filter(([v]) => v !== "console" || scope.admin).map(([v, label]) => (
          <Link key={v} to={{ view: v === "explorer" ? null : v, offset: null }} class={v === view ? "active" : undefined}>
            <span aria-current={v === view ? "page" : undefined}>{label}</span>
          </Link>
        ))}
      </nav>
      {path ? <GoTo path={path} /> : null}
      {access?.name && token() ? (
        <span class="whoami muted">
          {access.name}{" "}
          <button
            type="button"
            class="link"
            onClick={() => {
              setToken("");
              setGeneration((g) => g + 1);
            }}
          >
            Sign out
          </button>
        </span>
      ) : null}
      <ThemeSwitch />
    </header>
  );

  let body;
  if ((unauthorized || needsToken) && !token()) {
    body = <TokenForm rejected={rejected} onSaved={signedIn} />;
  } else if (granted.error && !access) {
    body = <ErrorBox error={granted.error} />;
  } else if (list.error) {
    body = <ErrorBox error={list.error} />;
  } else if (!access || !list.data) {
    body = <Loading when what="the snapshots" />;
  } else if (!snapshot || !snapRoot || !home || !path) {
    body = scope.admin ? (
      <p class="empty">
        No committed snapshot yet. Scan a directory with <code>storage-scan --aggregator URL --label NAME DIR</code>; it appears here once
        the aggregator commits it.
      </p>
    ) : (
      <p class="empty">No snapshot covers what your token reads ({listing(scope.prefixes)}) yet. Ask your administrator when the next scan is due.</p>
    );
  } else if (!within(path, snapRoot)) {
    body = (
      <p class="error" role="alert">
        {path.text} is not in snapshot #{snapshot.snapshot_id}, which covers {snapRoot.text}.{" "}
        <Link to={{ path: null, path_b64: null }}>Go to {home.text}</Link>
      </p>
    );
  } else if (!top) {
    body = (
      <p class="error" role="alert">
        Your token reads only below {listing(scope.prefixes)}; {path.text} is outside.{" "}
        {reach.map((t, i) => (
          <span key={t.b64 ?? t.text}>
            {i ? " · " : ""}
            <Link to={{ ...pathPatch(t), offset: null }}>Go to {t.text}</Link>
          </span>
        ))}
      </p>
    );
  } else {
    const props = { snapshot, root: top, path, q };
    body = (
      <>
        <p class="snapinfo muted small">
          {snapshot.filesystem_label}: {snapRoot.text} · scanned {dateSeconds(snapshot.started_at)} by {snapshot.ranks} rank
          {snapshot.ranks === 1 ? "" : "s"}
          {snapshot.scan_options ? ` with ${snapshot.scan_options}` : ""} · {count(snapshot.entries)} entries · {bytes(snapshot.apparent_bytes)}
          {scope.admin ? "" : " in what your token reads"}
          {snapshot.errors ? ` · ${count(snapshot.errors)} unreadable` : ""}
        </p>
        {scope.admin ? null : (
          <p class="scope muted small" data-testid="scope">
            Your token reads only below {listing(scope.prefixes)}.
          </p>
        )}
        {view === "search" ? (
          <Search {...props} />
        ) : view === "reports" ? (
          <Reports {...props} />
        ) : view === "console" ? (
          scope.admin ? (
            <Console snapshot={snapshot} q={q} />
          ) : (
            <p class="error" role="alert">
              The query console is for admin tokens; the Search view filters what your token reads.
            </p>
          )
        ) : view === "compare" ? (
          <Compare snapshots={snapshots} to={snapshot} root={top} path={path} q={q} />
        ) : (
          <Explorer {...props} />
        )}
      </>
    );
  }
  return (
    <AccessContext.Provider value={scope}>
      <a class="skip" href="#main">
        Skip to the content
      </a>
      {header}
      <main id="main" tabIndex={-1}>
        {body}
      </main>
      <div id="announce" class="sr-only" aria-live="polite" />
    </AccessContext.Provider>
  );
}
