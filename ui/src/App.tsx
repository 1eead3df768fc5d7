// The page: a header with the snapshot picker, the views and the theme switch; the view itself
// below. Everything the view shows follows from the URL.
import { useEffect, useState } from "preact/hooks";
import { setToken, token, type Snapshot } from "./api";
import { Compare } from "./Compare";
import { ErrorBox, Link, Loading } from "./components";
import { useApi } from "./data";
import { Explorer } from "./Explorer";
import { bytes, count, dateSeconds } from "./format";
import { within, type PathRef } from "./paths";
import { Reports } from "./Reports";
import { navigate, pathOf, pathPatch, useRoute, view as viewOf, type View } from "./route";
import { Search } from "./Search";

const TABS: [View, string][] = [
  ["explorer", "Explorer"],
  ["search", "Search"],
  ["reports", "Reports"],
  ["compare", "Compare"],
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

function TokenForm({ onSaved }: { onSaved: () => void }) {
  return (
    <form
      class="token"
      onSubmit={(e) => {
        e.preventDefault();
        setToken(((new FormData(e.target as HTMLFormElement).get("token") as string) ?? "").trim());
        onSaved();
      }}
    >
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
  useEffect(() => {
    const f = () => setUnauthorized(true);
    window.addEventListener("storage-tracker:unauthorized", f);
    return () => window.removeEventListener("storage-tracker:unauthorized", f);
  }, []);
  const list = useApi<{ snapshots: Snapshot[] }>("snapshots", { limit: 1000, generation });
  const snapshots = list.data?.snapshots ?? [];
  const view = viewOf(q);
  const wanted = Number(q.get("snapshot"));
  const snapshot = snapshots.find((s) => s.snapshot_id === wanted) ?? snapshots[0];
  const root: PathRef | undefined = snapshot ? { text: snapshot.root_path, b64: snapshot.root_path_b64 } : undefined;
  const path = root ? pathOf(q, root) : undefined;

  useEffect(() => {
    const title = path ? `${path.text} · storage-tracker` : "storage-tracker";
    document.title = view === "explorer" ? title : `${TABS.find(([v]) => v === view)?.[1]} · ${title}`;
  });

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
              // Keep the directory when the new snapshot covers it.
              const keep = path && within(path, { text: next.root_path, b64: next.root_path_b64 });
              navigate({ snapshot: next.snapshot_id, ...(keep ? {} : { path: null, path_b64: null }), offset: null });
            }}
          >
            {snapshots.map((s) => (
              <option key={s.snapshot_id} value={String(s.snapshot_id)}>
                #{s.snapshot_id} {s.filesystem_label} · {dateSeconds(s.started_at)}
              </option>
            ))}
          </select>
        </label>
      ) : null}
      <nav class="tabs" aria-label="Views">
        {TABS.map(([v, label]) => (
          <Link key={v} to={{ view: v === "explorer" ? null : v, offset: null }} class={v === view ? "active" : undefined}>
            <span aria-current={v === view ? "page" : undefined}>{label}</span>
          </Link>
        ))}
      </nav>
      {path ? <GoTo path={path} /> : null}
      <ThemeSwitch />
    </header>
  );

  let body;
  if (unauthorized && !token()) {
    body = (
      <TokenForm
        onSaved={() => {
          setUnauthorized(false);
          setGeneration((g) => g + 1);
        }}
      />
    );
  } else if (list.error) {
    body = (
      <>
        <ErrorBox error={list.error} />
        {list.error.status === 401 ? (
          <TokenForm
            onSaved={() => {
              setUnauthorized(false);
              setGeneration((g) => g + 1);
            }}
          />
        ) : null}
      </>
    );
  } else if (!list.data) {
    body = <Loading when what="the snapshots" />;
  } else if (!snapshot || !root || !path) {
    body = (
      <p class="empty">
        No committed snapshot yet. Scan a directory with <code>storage-scan --aggregator URL --label NAME DIR</code>; it appears here once
        the aggregator commits it.
      </p>
    );
  } else if (!within(path, root)) {
    body = (
      <p class="error" role="alert">
        {path.text} is not in snapshot #{snapshot.snapshot_id}, which covers {root.text}.{" "}
        <Link to={{ path: null, path_b64: null }}>Go to {root.text}</Link>
      </p>
    );
  } else {
    const props = { snapshot, root, path, q };
    body = (
      <>
        <p class="snapinfo muted small">
          {snapshot.filesystem_label}: {root.text} · scanned {dateSeconds(snapshot.started_at)} by {snapshot.ranks} rank
          {snapshot.ranks === 1 ? "" : "s"} · {count(snapshot.entries)} entries · {bytes(snapshot.apparent_bytes)}
          {snapshot.errors ? ` · ${count(snapshot.errors)} unreadable` : ""}
        </p>
        {view === "search" ? (
          <Search {...props} />
        ) : view === "reports" ? (
          <Reports {...props} />
        ) : view === "compare" ? (
          <Compare snapshots={snapshots} to={snapshot} root={root} path={path} q={q} />
        ) : (
          <Explorer {...props} />
        )}
      </>
    );
  }
  return (
    <>
      <a class="skip" href="#main">
        Skip to the content
      </a>
      {header}
      <main id="main" tabIndex={-1}>
        {body}
      </main>
      <div id="announce" class="sr-only" aria-live="polite" />
    </>
  );
}
