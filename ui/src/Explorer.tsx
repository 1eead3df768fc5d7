// The tree explorer: breadcrumbs, the directory's totals, its treemap and its children in a
// sortable, paged table whose directories expand in place (their children read when opened).
// Size bars are relative to the directory, or to a reference directory chosen with "use as
// reference" (kept in the URL); sizes from thresholds the user sets (kept in this browser) are
// coloured as warnings and alerts. Keys: j/k or arrows move between rows, Enter opens,
// Backspace or u goes up, t toggles the treemap.
import { useEffect, useState } from "preact/hooks";
import { plainError, useAccess } from "./access";
import { api, ApiError, CutShort, download, type Access, type Entry, type Snapshot } from "./api";
import { Bar, type Column, ErrorBox, KindIcon, Link, Loading, Pager, SortableHead, TimeCells, type Direction } from "./components";
import { useApi } from "./data";
import { age, bytes, count, counted, dateNs, percent } from "./format";
import { baseName, crumbs, parent, pathParams, same, type PathRef } from "./paths";
import { choice, intParam, navigate, pathPatch } from "./route";
import { parseSize } from "./Search";
import { Treemap } from "./Treemap";

/** Rows an expanded directory shows in place; the rest are a link away. */
const EXPANDED_ROWS = 50;

/** Sizes from which a row's size is a warning, and an alert: the user's, or these. */
const SEVERITY_KEY = "storage-tracker.severity";
const DEFAULT_SEVERITY = { warn: "1T", alert: "10T" };

function loadSeverity(): { warn: string; alert: string } {
  try {
    const saved = JSON.parse(localStorage.getItem(SEVERITY_KEY) ?? "null");
    if (saved && typeof saved.warn === "string" && typeof saved.alert === "string") return saved;
  } catch {
    // A value that does not parse is replaced by the defaults.
  }
  return DEFAULT_SEVERITY;
}

function severityClass(size: number, warn: number | undefined, alert: number | undefined): string {
  if (alert !== undefined && size >= alert) return " sev-alert";
  if (warn !== undefined && size >= warn) return " sev-warn";
  return "";
}

/** How rows draw their size: the bar's whole, and the thresholds. */
interface Scale {
  whole: number;
  warn?: number;
  alert?: number;
}

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
  // The reference directory of the bars, if one is chosen.
  const refPath: PathRef | null = q.get("ref_b64") ? { text: q.get("ref") ?? "", b64: q.get("ref_b64")! } : q.get("ref") ? { text: q.get("ref")! } : null;
  const reference = useApi(refPath ? api.entry(snapshot.snapshot_id, pathParams(refPath)) : null);
  const [severity, setSeverity] = useState(loadSeverity);
  const warn = parseSize(severity.warn);
  const alert = parseSize(severity.alert);
  const scale: Scale = {
    whole: refPath && reference.data ? (reference.data.bytes ?? reference.data.size) : (dir?.bytes ?? 0),
    warn: typeof warn === "number" ? warn : undefined,
    alert: typeof alert === "number" ? alert : undefined,
  };
  const setThreshold = (which: "warn" | "alert", value: string) => {
    const next = { ...severity, [which]: value };
    setSeverity(next);
    localStorage.setItem(SEVERITY_KEY, JSON.stringify(next));
  };

  const up = () => {
    if (!same(path, root)) navigate({ ...pathPatch(parent(path)), offset: null });
  };
  const onKey = (e: KeyboardEvent) => {
    const target = e.target as HTMLElement;
    if (target.closest("input, select, textarea")) return;
    const links = [...document.querySelectorAll<HTMLElement>("table.children tbody .name-cell > :is(a, button:not(.expand))")];
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
      <div class="toolbar scale">
        {refPath ? (
          <span data-testid="reference">
            Bars relative to <strong>{refPath.text}</strong>
            {reference.data ? ` (${bytes(reference.data.bytes ?? reference.data.size)})` : ""} ·{" "}
            <Link to={{ ref: null, ref_b64: null }}>relative to each directory</Link>
          </span>
        ) : (
          <span>
            Bars relative to this directory ·{" "}
            <Link to={{ ref: path.text, ref_b64: path.b64 ?? null }} title="Size bars everywhere relative to this directory">
              use it as the reference
            </Link>
          </span>
        )}
        <label>
          Warn from <input name="warn" size={5} value={severity.warn} onInput={(e) => setThreshold("warn", (e.target as HTMLInputElement).value)} />
        </label>
        <label>
          alert from <input name="alert" size={5} value={severity.alert} onInput={(e) => setThreshold("alert", (e.target as HTMLInputElement).value)} />
        </label>
        {typeof warn === "string" || typeof alert === "string" ? (
          <span class="error" role="alert">
            {typeof warn === "string" ? warn : alert}
          </span>
        ) : null}
      </div>
      <ErrorBox error={reference.error} notFound={refPath ? `The reference ${refPath.text} is not in snapshot #${snapshot.snapshot_id}.` : undefined} />
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
              <ChildRows key={e.name_b64 ?? e.name} entry={e} level={0} snapshot={snapshot} scale={scale} sort={sort} order={order} onSelect={setSelected} />
            ))}
          </tbody>
        </table>
        {selected ? <Details entry={selected} snapshot={snapshot} onClose={() => setSelected(null)} /> : null}
      </div>
      {data.data ? <Pager offset={offset} shown={rows.length} total={data.data.total} limit={PAGE} /> : null}
    </div>
  );
}

/** One entry's row and, for an expanded directory, its children's rows below it (read when it is
 * expanded, in the table's sort). */
function ChildRows(props: {
  entry: Entry;
  level: number;
  snapshot: Snapshot;
  scale: Scale;
  sort: string;
  order: Direction;
  onSelect: (e: Entry) => void;
}) {
  const { entry: e, level, snapshot, scale } = props;
  const [open, setOpen] = useState(false);
  const dir = e.kind === "dir";
  return (
    <>
      <tr class={`${e.kind}${level > 0 ? " nested" : ""}`} data-level={level}>
        <td class="name-cell" style={level > 0 ? { paddingLeft: `${8 + level * 18}px` } : undefined}>
          {dir ? (
            <button
              type="button"
              class="expand"
              aria-expanded={open}
              aria-label={`${open ? "Collapse" : "Expand"} ${e.name}`}
              onClick={() => setOpen(!open)}
            />
          ) : (
            <span class="expand" aria-hidden="true" />
          )}
          <KindIcon kind={e.kind} />
          {dir ? (
            <Link to={{ ...pathPatch(entryRef(e)), offset: null }}>{e.name}</Link>
          ) : (
            <button type="button" class="link" onClick={() => props.onSelect(e)} aria-label={`${e.name}: details`}>
              {e.name}
            </button>
          )}
          {e.error ? (
            <span class="badge" title={errorText(e.error)}>
              error
            </span>
          ) : null}
        </td>
        <td class={`num size${severityClass(e.bytes, scale.warn, scale.alert)}`}>
          <span>{bytes(e.bytes)}</span>
          <Bar part={e.bytes} whole={scale.whole} />
          <span class="muted pct">{percent(e.bytes, scale.whole)}</span>
        </td>
        <td class="num">{bytes(e.allocated)}</td>
        <td class="num">{dir ? count(e.files) : ""}</td>
        <td class="num">{dir ? count(e.dirs) : ""}</td>
        <TimeCells entry={e} scanSeconds={snapshot.started_at} />
        <td>{e.user ?? e.uid}</td>
      </tr>
      {open ? <Expanded {...props} /> : null}
    </>
  );
}

function Expanded(props: { entry: Entry; level: number; snapshot: Snapshot; scale: Scale; sort: string; order: Direction; onSelect: (e: Entry) => void }) {
  const { entry, snapshot } = props;
  const data = useApi(
    api.children(snapshot.snapshot_id, {
      ...pathParams(entryRef(entry)),
      sort: props.sort as "bytes",
      order: props.order,
      limit: EXPANDED_ROWS,
    }),
  );
  const access = useAccess();
  const indent = { paddingLeft: `${8 + (props.level + 1) * 18}px` };
  if (data.error || data.loading || !data.data) {
    return (
      <tr class="nested">
        <td colSpan={COLUMNS.length} style={indent} class="muted">
          {data.error ? plainError(data.error, access) : "Loading…"}
        </td>
      </tr>
    );
  }
  const more = data.data.total - data.data.children.length;
  return (
    <>
      {data.data.children.map((c) => (
        <ChildRows key={c.name_b64 ?? c.name} {...props} entry={c} level={props.level + 1} />
      ))}
      {data.data.children.length === 0 ? (
        <tr class="nested">
          <td colSpan={COLUMNS.length} style={indent} class="muted">
            empty
          </td>
        </tr>
      ) : null}
      {more > 0 ? (
        <tr class="nested">
          <td colSpan={COLUMNS.length} style={indent}>
            <Link to={{ ...pathPatch(entryRef(entry)), offset: null }}>{count(more)} more in {entry.name}</Link>
          </td>
        </tr>
      ) : null}
    </>
  );
}
