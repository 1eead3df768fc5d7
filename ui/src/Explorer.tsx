// The tree explorer: breadcrumbs, the directory's totals, its treemap and its children in a
// sortable, paged table. Keys: j/k or arrows move between rows, Enter opens, Backspace or u goes
// up, t toggles the treemap.
import { useEffect, useState } from "preact/hooks";
import { plainError, useAccess } from "./access";
import { api, ApiError, CutShort, download, type Access, type Entry, type Snapshot } from "./api";
import { Bar, type Column, ErrorBox, KindIcon, Link, Loading, Pager, SortableHead, TimeCells, type Direction } from "./components";
import { useApi } from "./data";
import { age, bytes, count, counted, dateNs, percent } from "./format";
import { baseName, crumbs, parent, pathParams, same, type PathRef } from "./paths";
import { choice, intParam, navigate, pathPatch } from "./route";
import { Treemap } from "./Treemap";

type SortKey = "name" | "bytes" | "allocated" | "files" | "dirs" | "mtime" | "atime" | "owner";
const SORTS = ["name", "bytes", "allocated", "files", "mtime", "atime"] as const;
const PAGE = 100;

const COLUMNS: Column<SortKey>[] = [
  { key: "name", label: "Name", sortable: true },
  { key: "bytes", label: "Size", numeric: true, sortable: true },
  { key: "allocated", label: "On disk", numeric: true, sortable: true },
  { key: "files", label: "Files", numeric: true, sortable: true },
  { key: "dirs", label: "Dirs", numeric: true },
  { key: "mtime", label: "Modified", numeric: true, sortable: true },
  { key: "atime", label: "Accessed", numeric: true, sortable: true },
  { key: "owner", label: "Owner" },
];

export function errorText(error: { op: string; errno: number }): string {
  return `${error.op} failed with errno ${error.errno}`;
}

export function entryRef(e: { path: string; path_b64?: string }): PathRef {
  return e.path_b64 ? { text: e.path, b64: e.path_b64 } : { text: e.path };
}

export function Breadcrumbs({ path, root, view }: { path: PathRef; root: PathRef; view?: string }) {
  const list = crumbs(path, root);
  return (
    <nav class="crumbs" aria-label="Path">
      <ol>
        {list.map((p, i) => {
          const last = i === list.length - 1;
          const label = i === 0 ? p.text : baseName(p);
          return (
            <li key={p.b64 ?? p.text}>
              {last ? (
                <span aria-current="location">{label}</span>
              ) : (
                <Link to={{ ...pathPatch(p), view: view ?? undefined, offset: null }}>{label}</Link>
              )}
            </li>
          );
        })}
      </ol>
    </nav>
  );
}

function Details({ entry, snapshot, onClose }: { entry: Entry; snapshot: Snapshot; onClose: () => void }) {
  const rows: [string, string][] = [
    ["Path", entry.path],
    ["Kind", entry.kind],
    ["Size", `${bytes(entry.size)} (${count(entry.size)} bytes)`],
    ["On disk", bytes(entry.allocated)],
    ["Owner", `${entry.user ?? "?"} (uid ${entry.uid})`],
    ["Group", `${entry.group ?? "?"} (gid ${entry.gid})`],
    ["Mode", `0${(entry.mode & 0o7777).toString(8)}`],
    ["Links", count(entry.nlink)],
    ["Modified", `${dateNs(entry.mtime_ns)} (${age(entry.mtime_ns, snapshot.started_at)} before the scan)`],
    ["Accessed", `${dateNs(entry.atime_ns)} (${age(entry.atime_ns, snapshot.started_at)} before the scan)`],
  ];
  if (entry.symlink_target !== undefined) rows.push(["Target", entry.symlink_target]);
  if (entry.error) rows.push(["Error", errorText(entry.error)]);
  return (
    <aside class="details" aria-label="Details">
      <h3>
        <KindIcon kind={entry.kind} />
        {entry.name}
      </h3>
      <dl>
        {rows.map(([k, v]) => (
          <div key={k}>
            <dt>{k}</dt>
            <dd>{v}</dd>
          </div>
        ))}
      </dl>
      <button type="button" onClick={onClose}>
        Close
      </button>
    </aside>
  );
}

async function exportNcdu(snapshot: Snapshot, path: PathRef, access: Access, report: (s: string | null) => void) {
  report("exporting…");
  try {
    await download(api.ncdu(snapshot.snapshot_id, pathParams(path)), `ncdu-${snapshot.filesystem_label}-${snapshot.snapshot_id}.json`);
    report(null);
  } catch (e) {
    report(e instanceof CutShort ? e.message : e instanceof ApiError ? `The export failed: ${plainError(e, access)}` : `The export failed: ${String(e)}`);
  }
}

export function Explorer({ snapshot, root, path, q }: { snapshot: Snapshot; root: PathRef; path: PathRef; q: URLSearchParams }) {
  const sort = choice(q, "sort", SORTS, "bytes");
  const order = choice<Direction>(q, "order", ["asc", "desc"], sort === "name" ? "asc" : "desc");
  const offset = intParam(q, "offset", 0);
  const showMap = q.get("treemap") !== "off";
  const data = useApi(api.children(snapshot.snapshot_id, {
    ...pathParams(path),
    sort,
    order,
    limit: PAGE,
    offset,
  }));
  const [selected, setSelected] = useState<Entry | null>(null);
  const [exporting, setExporting] = useState<string | null>(null);
  const access = useAccess();
  useEffect(() => setSelected(null), [path.text, path.b64, snapshot.snapshot_id]);
  const rows = data.data?.children ?? [];
  const dir = data.data?.directory;

  const up = () => {
    if (!same(path, root)) navigate({ ...pathPatch(parent(path)), offset: null });
  };
  const onKey = (e: KeyboardEvent) => {
    const target = e.target as HTMLElement;
    if (target.closest("input, select, textarea")) return;
    const links = [...document.querySelectorAll<HTMLElement>("table.children tbody .name-cell > :is(a, button)")];
    const at = links.indexOf(document.activeElement as HTMLElement);
    if (e.key === "ArrowDown" || e.key === "j") {
      links[Math.min(links.length - 1, at + 1)]?.focus();
      e.preventDefault();
    } else if (e.key === "ArrowUp" || e.key === "k") {
      links[Math.max(0, at - 1)]?.focus();
      e.preventDefault();
    } else if (e.key === "Backspace" || e.key === "u") {
      up();
      e.preventDefault();
    } else if (e.key === "t") {
      navigate({ treemap: showMap ? "off" : null });
    }
  };
  useEffect(() => {
    window.addEventListener("keydown", onKey);
    return () => window.removeEventListener("keydown", onKey);
  });

  return (
    <div class="explorer">
      <Breadcrumbs path={path} root={root} />
      {dir ? (
        <p class="summary">
          <strong>{bytes(dir.bytes)}</strong> in {counted(dir.files, "file", "files")} and {counted(dir.dirs, "directory", "directories")} ·{" "}
          {bytes(dir.allocated)} on disk · newest change {dateNs(dir.max_mtime_ns)} ·{" "}
          <Link to={{ view: "compare", offset: null }}>history and growth</Link> ·{" "}
          <button type="button" class="link" onClick={() => exportNcdu(snapshot, path, access, setExporting)} title="Browse this directory offline with ncdu -f FILE or gdu -f FILE">
            export for ncdu
          </button>
          {exporting ? <span class="muted"> {exporting}</span> : null}
        </p>
      ) : null}
      {showMap ? <Treemap snapshot={snapshot} path={path} q={q} /> : null}
      <p class="muted small">
        <button type="button" class="link" onClick={() => navigate({ treemap: showMap ? "off" : null })}>
          {showMap ? "Hide the treemap" : "Show the treemap"}
        </button>{" "}
        · Keys: ↑/↓ or j/k move, Enter opens, Backspace or u goes up, t toggles the treemap
      </p>
      <ErrorBox error={data.error} notFound={`There is no directory ${path.text} in snapshot #${snapshot.snapshot_id}.`} />
      <Loading when={data.loading && !data.data} what="the directory" />
      <div class="with-details">
        <table class="children" aria-label={`Contents of ${path.text}`} aria-busy={data.loading}>
          <SortableHead
            columns={COLUMNS}
            sort={sort as SortKey}
            order={order}
            onSort={(key, o) => navigate({ sort: key === "bytes" ? null : key, order: o, offset: null })}
          />
          <tbody>
            {!same(path, root) ? (
              <tr class="up">
                <td class="name-cell" colSpan={COLUMNS.length}>
                  <Link to={{ ...pathPatch(parent(path)), offset: null }} label="Parent directory">
                    ⬑ ..
                  </Link>
                </td>
              </tr>
            ) : null}
            {rows.map((e) => (
              <tr key={e.name_b64 ?? e.name} class={e.kind}>
                <td class="name-cell">
                  <KindIcon kind={e.kind} />
                  {e.kind === "dir" ? (
                    <Link to={{ ...pathPatch(entryRef(e)), offset: null }}>{e.name}</Link>
                  ) : (
                    <button type="button" class="link" onClick={() => setSelected(e)} aria-label={`${e.name}: details`}>
                      {e.name}
                    </button>
                  )}
                  {e.error ? (
                    <span class="badge" title={errorText(e.error)}>
                      error
                    </span>
                  ) : null}
                </td>
                <td class="num size">
                  <span>{bytes(e.bytes)}</span>
                  <Bar part={e.bytes} whole={dir?.bytes ?? 0} />
                  <span class="muted pct">{percent(e.bytes, dir?.bytes ?? 0)}</span>
                </td>
                <td class="num">{bytes(e.allocated)}</td>
                <td class="num">{e.kind === "dir" ? count(e.files) : ""}</td>
                <td class="num">{e.kind === "dir" ? count(e.dirs) : ""}</td>
                <TimeCells entry={e} scanSeconds={snapshot.started_at} />
                <td>{e.user ?? e.uid}</td>
              </tr>
            ))}
          </tbody>
        </table>
        {selected ? <Details entry={selected} snapshot={snapshot} onClose={() => setSelected(null)} /> : null}
      </div>
      {data.data ? <Pager offset={offset} shown={rows.length} total={data.data.total} limit={PAGE} /> : null}
    </div>
  );
}
