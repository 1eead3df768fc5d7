// Reports: the largest files and directories under the current directory, usage by owner, group,
// file type and file category, duplicate files, size and age histograms, and stale data with a
// CSV download.
import type { ComponentChildren } from "preact";
import { useState } from "preact/hooks";
import { listing, plainError, useAccess } from "./access";
import { api, ApiError, CutShort, download, type Listing, type Snapshot, type UsageItem } from "./api";
import { Bar, type Column, ErrorBox, Head, KindIcon, Link, Loading, Pager, SortableHead, TimeCells, sortRows, useFields, type Direction } from "./components";
import { useApi } from "./data";
import { colorOf } from "./colors";
import { bytes, count, day, percent } from "./format";
import { parent, pathParams, type PathRef } from "./paths";
import { choice, intParam, navigate, pathPatch } from "./route";
import { DuplicatesReport } from "./Duplicates";
import { Breadcrumbs, entryRef } from "./Explorer";
import { parseSize } from "./Search";

export const REPORTS = [
  ["top-files", "Largest files"],
  ["top-dirs", "Largest directories"],
  ["users", "Users"],
  ["groups", "Groups"],
  ["types", "File types"],
  ["categories", "File categories"],
  ["duplicates", "Duplicates"],
  ["sizes", "File sizes"],
  ["mtime", "Age (modified)"],
  ["atime", "Age (accessed)"],
  ["stale", "Stale data"],
] as const;
type Report = (typeof REPORTS)[number][0];
/** Reports of a whole snapshot, which only an admin token may read. */
const WHOLE_SNAPSHOT: readonly Report[] = ["users", "groups", "types", "categories", "duplicates", "sizes", "mtime", "atime"];
const USAGE_BY = { users: "user", groups: "group", types: "type", categories: "category" } as const;
const isUsage = (r: Report): r is keyof typeof USAGE_BY => r in USAGE_BY;
const PAGE = 100;

export function Reports({ snapshot, root, path, q }: { snapshot: Snapshot; root: PathRef; path: PathRef; q: URLSearchParams }) {
  const report = choice<Report>(
    q,
    "report",
    REPORTS.map(([k]) => k),
    "top-files",
  );
  const underPath = report === "top-files" || report === "top-dirs" || report === "stale";
  const access = useAccess();
  const offered = REPORTS.filter(([key]) => access.admin || !WHOLE_SNAPSHOT.includes(key));
  if (!access.admin && WHOLE_SNAPSHOT.includes(report)) {
    const label = REPORTS.find(([k]) => k === report)?.[1];
    return (
      <div class="reports">
        <ReportTabs offered={offered} report={report} />
        <p class="error" role="alert">
          {label} covers the whole snapshot, so it needs an administrator's token; yours reads only below {listing(access.prefixes)}.{" "}
          <Link to={{ report: null, offset: null }}>Show the largest files instead</Link>
        </p>
      </div>
    );
  }
  return (
    <div class="reports">
      <ReportTabs offered={offered} report={report} />
      {underPath ? <Breadcrumbs path={path} root={root} view="reports" /> : <p class="muted small">Whole snapshot ({snapshot.root_path})</p>}
      {report === "top-files" || report === "top-dirs" ? (
        <Top snapshot={snapshot} path={path} q={q} what={report === "top-files" ? "files" : "dirs"} />
      ) : isUsage(report) ? (
        <UsageReport snapshot={snapshot} by={USAGE_BY[report]} />
      ) : report === "duplicates" ? (
        <DuplicatesReport snapshot={snapshot} q={q} />
      ) : report === "stale" ? (
        <Stale snapshot={snapshot} path={path} q={q} />
      ) : (
        <HistogramReport snapshot={snapshot} of={report === "sizes" ? "size" : report} q={q} />
      )}
    </div>
  );
}

function ReportTabs({ offered, report }: { offered: (typeof REPORTS)[number][]; report: Report }) {
  return (
    <nav class="subtabs" aria-label="Reports">
      {offered.map(([key, label]) => (
        <Link key={key} to={{ report: key, offset: null }} class={key === report ? "active" : undefined}>
          <span aria-current={key === report ? "page" : undefined}>{label}</span>
        </Link>
      ))}
    </nav>
  );
}

function Top({ snapshot, path, q, what }: { snapshot: Snapshot; path: PathRef; q: URLSearchParams; what: "files" | "dirs" }) {
  const offset = intParam(q, "offset", 0);
  const data = useApi(api.top(snapshot.snapshot_id, { ...pathParams(path), what, limit: PAGE, offset }));
  return (
    <>
      <ErrorBox error={data.error} notFound={`There is no directory ${path.text} in snapshot #${snapshot.snapshot_id}.`} />
      <Loading when={data.loading} what={`the largest ${what}`} />
      {data.data ? (
        <>
          <EntryTable snapshot={snapshot} rows={data.data.entries} rank={offset} />
          <Pager offset={offset} shown={data.data.entries.length} total={data.data.total} limit={PAGE} />
        </>
      ) : null}
    </>
  );
}

function EntryTable({ snapshot, rows, rank }: { snapshot: Snapshot; rows: Listing["entries"]; rank: number }) {
  const largest = rows.reduce((m, r) => Math.max(m, r.bytes), 0);
  return (
    <table class="entries">
      <Head columns={[["#", "num"], "Path", ["Size", "num"], ["Files", "num"], ["Modified", "num"], ["Accessed", "num"], "Owner"]} />
      <tbody>
        {rows.map((e, i) => (
          <tr key={e.path_b64 ?? e.path}>
            <td class="num muted">{rank + i + 1}</td>
            <td class="path">
              <KindIcon kind={e.kind} />
              <Link to={{ view: "explorer", ...pathPatch(e.kind === "dir" ? entryRef(e) : parent(entryRef(e))), offset: null }}>{e.path}</Link>
            </td>
            <td class="num size">
              <span>{bytes(e.bytes)}</span>
              <Bar part={e.bytes} whole={largest} />
            </td>
            <td class="num">{e.kind === "dir" ? count(e.files) : ""}</td>
            <TimeCells entry={e} scanSeconds={snapshot.started_at} />
            <td>{e.user ?? e.uid}</td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}

type UsageKey = "name" | "category" | "bytes" | "allocated" | "files" | "entries" | "types";
type UsageBy = (typeof USAGE_BY)[keyof typeof USAGE_BY];

const typeName = (t: string) => (t ? `.${t}` : "(no extension)");

function UsageReport({ snapshot, by }: { snapshot: Snapshot; by: UsageBy }) {
  const data = useApi(api.usage(snapshot.snapshot_id, { by, limit: 1000 }));
  const [sort, setSort] = useState<[UsageKey, Direction]>(["bytes", "desc"]);
  const label = { type: "Type", category: "Category", user: "User", group: "Group" }[by];
  const owners = by === "user" || by === "group";
  const columns: Column<UsageKey>[] = [
    { key: "name", label, sortable: true },
    ...(by === "type" ? [{ key: "category" as const, label: "Category", sortable: true }] : []),
    { key: "bytes", label: "Size", numeric: true, sortable: true },
    { key: "allocated", label: "On disk", numeric: true, sortable: true },
    { key: "files", label: "Files", numeric: true, sortable: true },
    // A type's or a category's entries are its files.
    ...(owners ? [{ key: "entries" as const, label: "Entries", numeric: true, sortable: true }] : []),
    ...(by === "category" ? [{ key: "types" as const, label: "Largest types" }] : []),
  ];
  const items = data.data?.items ?? [];
  const total = items.reduce((s, i) => s + i.bytes, 0);
  const name = (i: UsageItem) => (by === "type" ? typeName(i.name) : by === "category" ? i.name : i.name || `${by === "user" ? "uid" : "gid"} ${i.id}`);
  const sortKey = (i: UsageItem) => (sort[0] === "name" ? name(i) : sort[0] === "category" ? (i.category ?? "") : sort[0] === "types" ? 0 : i[sort[0]]);
  const rows = sortRows(items, sortKey, sort[1]);
  return (
    <>
      <ErrorBox error={data.error} />
      <Loading when={data.loading} what="usage" />
      {data.data ? (
        <table class="usage" aria-label={`Usage by ${by}`}>
          <SortableHead columns={columns} sort={sort[0]} order={sort[1]} onSort={(k, o) => setSort([k, o])} />
          <tbody>
            {rows.map((i) => (
              <tr key={`${i.id ?? ""}:${i.name_b64 ?? i.name}`}>
                <td>
                  {owners ? (
                    <Link to={{ view: "search", q: "*", match: "glob", [by]: i.name || String(i.id), offset: null }} title={`Search the files of ${name(i)}`}>
                      {name(i)}
                    </Link>
                  ) : (
                    <>
                      {by === "category" ? <span class="swatch" style={{ background: colorOf(i.name, "category") }} aria-hidden="true" /> : null}
                      {name(i)}
                    </>
                  )}
                </td>
                {by === "type" ? <td>{i.category}</td> : null}
                <td class="num size">
                  <span>{bytes(i.bytes)}</span>
                  <Bar part={i.bytes} whole={total} />
                  <span class="muted pct">{percent(i.bytes, total)}</span>
                </td>
                <td class="num">{bytes(i.allocated)}</td>
                <td class="num">{count(i.files)}</td>
                {owners ? <td class="num">{count(i.entries)}</td> : null}
                {by === "category" ? <td class="types muted small">{i.types ? <TypeList types={i.types} of={i} /> : null}</td> : null}
              </tr>
            ))}
          </tbody>
        </table>
      ) : null}
    </>
  );
}

/** A category's largest types, with their share of it. */
function TypeList({ types, of }: { types: NonNullable<UsageItem["types"]>; of: UsageItem }) {
  const rest = of.bytes - types.reduce((s, t) => s + t.bytes, 0);
  return (
    <>
      {types.map((t, k) => (
        <span key={t.name_b64 ?? t.name}>
          {k > 0 ? ", " : ""}
          {typeName(t.name)} {bytes(t.bytes)}
        </span>
      ))}
      {rest > 0 ? <span>, other types {bytes(rest)}</span> : null}
    </>
  );
}

function HistogramReport({ snapshot, of, q }: { snapshot: Snapshot; of: "size" | "mtime" | "atime"; q: URLSearchParams }) {
  const measure = choice(q, "measure", ["files", "bytes"], "files");
  const data = useApi(api.histograms(snapshot.snapshot_id, { of }));
  const buckets = data.data?.buckets ?? [];
  const most = buckets.reduce((m, b) => Math.max(m, b[measure]), 0);
  const total = buckets.reduce((m, b) => m + b[measure], 0);
  const title = of === "size" ? "Files by size" : of === "mtime" ? "Files by time since last modification" : "Files by time since last access";
  return (
    <>
      <div class="toolbar">
        <strong>{title}</strong>
        <label>
          Measure{" "}
          <select value={measure} onChange={(e) => navigate({ measure: (e.target as HTMLSelectElement).value })}>
            <option value="files">number of files</option>
            <option value="bytes">bytes</option>
          </select>
        </label>
      </div>
      <ErrorBox error={data.error} />
      <Loading when={data.loading} what="the histogram" />
      {data.data ? (
        <table class="histogram" aria-label={title}>
          <thead>
            <tr>
              <th scope="col">{of === "size" ? "Size" : "Age"}</th>
              <th scope="col" class="num">
                Files
              </th>
              <th scope="col" class="num">
                Bytes
              </th>
              <th scope="col" class="chart">
                Share of {measure}
              </th>
            </tr>
          </thead>
          <tbody>
            {buckets.map((b) => (
              <tr key={b.bucket}>
                <th scope="row">{b.label}</th>
                <td class="num">{count(b.files)}</td>
                <td class="num">{bytes(b.bytes)}</td>
                <td class="chart">
                  <Bar part={b[measure]} whole={most} />
                  <span class="muted pct">{percent(b[measure], total)}</span>
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      ) : null}
    </>
  );
}

function Stale({ snapshot, path, q }: { snapshot: Snapshot; path: PathRef; q: URLSearchParams }) {
  const days = intParam(q, "days", 180, 1, 100_000);
  const by = choice(q, "by", ["atime", "mtime"], "atime");
  const minText = q.get("min_size") ?? "";
  const minSize = parseSize(minText);
  const offset = intParam(q, "offset", 0);
  const params = { ...pathParams(path), days, by, min_size: typeof minSize === "number" ? minSize : undefined };
  const data = useApi(typeof minSize === "string" ? null : api.stale(snapshot.snapshot_id, { ...params, limit: PAGE, offset }));
  const [downloading, setDownloading] = useState<string | null>(null);
  const rows = data.data?.entries ?? [];
  const [failed, setFailed] = useState<string | null>(null);
  const access = useAccess();
  // The CSV is every matching row, streamed (no limit); it is saved only once it arrived whole.
  const csv = async () => {
    setFailed(null);
    setDownloading("Preparing the CSV…");
    try {
      await download(
        api.staleCsv(snapshot.snapshot_id, params),
        `stale-${snapshot.filesystem_label}-${day(snapshot.started_at)}-${by}-${days}d.csv`,
        (received) => setDownloading(`Downloading the CSV… ${bytes(received)}`),
      );
      setDownloading(null);
    } catch (e) {
      setDownloading(null);
      setFailed(e instanceof CutShort ? e.message : e instanceof ApiError ? `The download failed: ${plainError(e, access)}` : `The download failed: ${String(e)}`);
    }
  };
  return (
    <>
      <StaleForm key={q.toString()} by={by} days={days} minText={minText}>
        <button type="button" onClick={csv} disabled={typeof minSize === "string"}>
          Download CSV
        </button>
        <span class="muted" role="status">
          {downloading ?? ""}
        </span>
      </StaleForm>
      {failed ? (
        <p class="error" role="alert" data-testid="download-failed">
          {failed}
        </p>
      ) : null}
      {typeof minSize === "string" ? (
        <p class="error" role="alert">
          {minSize}
        </p>
      ) : null}
      <ErrorBox error={data.error} notFound={`There is no directory ${path.text} in snapshot #${snapshot.snapshot_id}.`} />
      <Loading when={data.loading} what="stale files" />
      {data.data ? (
        <>
          <p class="muted small">
            Files under {path.text} not {by === "atime" ? "accessed" : "modified"} in the {days} days before the scan ({day(snapshot.started_at)}), largest first.
          </p>
          <EntryTable snapshot={snapshot} rows={rows} rank={offset} />
          {rows.length === 0 ? <p class="muted">None.</p> : null}
          <Pager offset={offset} shown={rows.length} total={data.data.total} limit={PAGE} />
        </>
      ) : null}
    </>
  );
}

function StaleForm(props: { by: string; days: number; minText: string; children: ComponentChildren }) {
  const { values, bind } = useFields({ by: props.by, days: String(props.days), min_size: props.minText });
  const submit = (e: Event) => {
    e.preventDefault();
    navigate({ days: values.days, by: values.by, min_size: values.min_size.trim() || null, offset: null });
  };
  return (
    <form class="filters" onSubmit={submit} aria-label="Stale data">
      <div class="row">
        <label>
          Not{" "}
          <select {...bind("by")}>
            <option value="atime">accessed</option>
            <option value="mtime">modified</option>
          </select>
        </label>
        <label>
          for <input {...bind("days")} type="number" min={1} size={5} /> days
        </label>
        <label>
          at least <input {...bind("min_size")} placeholder="e.g. 100M" size={8} />
        </label>
        <button type="submit">Show</button>
        {props.children}
      </div>
    </form>
  );
}
