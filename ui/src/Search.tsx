// Search by name or path (substring, glob or regex) under a directory, with filters on kind,
// size, owner, group, types and times; the filters alone search too, without text. Results sort
// by any column (on the server: the order holds across pages) and show their total. The form's
// fields live in the URL, so a search is a link.
import { api, type Query, type Snapshot } from "./api";
import { ErrorBox, KindIcon, Link, Loading, Pager, SortableHead, TimeCells, announce, useFields, type Column, type Direction } from "./components";
import { useApi } from "./data";
import { bytes, count } from "./format";
import { parent, pathParams, type PathRef } from "./paths";
import { choice, intParam, navigate, pathPatch } from "./route";
import { entryRef } from "./Explorer";
import { useEffect } from "preact/hooks";

const PAGE = 100;
const FIELDS = ["q", "match", "field", "ignore_case", "kind", "min_size", "max_size", "user", "group", "type", "mtime_after", "mtime_before", "atime_after", "atime_before"] as const;

type SortKey = "name" | "path" | "size" | "allocated" | "mtime" | "atime" | "owner" | "group";
const SORTS = ["name", "path", "size", "allocated", "mtime", "atime"] as const;
const COLUMNS: Column<SortKey>[] = [
  { key: "name", label: "Name", sortable: true },
  { key: "path", label: "Path", sortable: true },
  { key: "size", label: "Size", numeric: true, sortable: true },
  { key: "allocated", label: "On disk", numeric: true, sortable: true },
  { key: "mtime", label: "Modified", numeric: true, sortable: true },
  { key: "atime", label: "Accessed", numeric: true, sortable: true },
  { key: "owner", label: "Owner" },
  { key: "group", label: "Group" },
];
const SORT_WORDS: Record<string, string> = { name: "name", path: "path", size: "size", allocated: "bytes on disk", mtime: "modification time", atime: "access time" };

const SIZE_UNITS: Record<string, number> = { "": 1, b: 1, k: 2 ** 10, m: 2 ** 20, g: 2 ** 30, t: 2 ** 40, p: 2 ** 50 };

/** "10G", "1.5 TiB", "4096": bytes; undefined when empty; an error message when not a size. */
export function parseSize(text: string | null): number | undefined | string {
  if (!text || !text.trim()) return undefined;
  const m = /^\s*(\d+(?:\.\d+)?)\s*([kmgtp]?)(?:i?b)?\s*$/i.exec(text);
  if (!m) return `"${text}" is not a size; write e.g. 500M, 10G or 1.5T`;
  return Math.round(Number(m[1]) * SIZE_UNITS[m[2].toLowerCase()]);
}

export function Search({ snapshot, path, q }: { snapshot: Snapshot; path: PathRef; q: URLSearchParams }) {
  const offset = intParam(q, "offset", 0);
  const minSize = parseSize(q.get("min_size"));
  const maxSize = parseSize(q.get("max_size"));
  const badSize = [minSize, maxSize].find((s) => typeof s === "string") as string | undefined;
  // Any filter searches, text or not; "go" is a search of everything below the directory.
  const active = (FIELDS.some((f) => (q.get(f) ?? "") !== "") || q.get("go") === "1") && !badSize;
  const sort = choice(q, "sort", SORTS, "size");
  const order: Direction = choice(q, "order", ["asc", "desc"], sort === "name" || sort === "path" ? "asc" : "desc");
  // The words (match, field) go as the URL has them: the API refuses one it does not know, and
  // the page shows its message.
  const text = (f: (typeof FIELDS)[number]) => q.get(f) ?? undefined;
  const params: Query<"/api/v1/snapshots/{snapshot_id}/search"> = {
    ...pathParams(path),
    limit: PAGE,
    offset,
    q: text("q"),
    match: text("match") as Query<"/api/v1/snapshots/{snapshot_id}/search">["match"],
    field: text("field") as Query<"/api/v1/snapshots/{snapshot_id}/search">["field"],
    ignore_case: q.get("ignore_case") === "true" ? true : undefined,
    min_size: minSize as number | undefined,
    max_size: maxSize as number | undefined,
    user: text("user"),
    group: text("group"),
    // Types as typed, "h5, nc": each without the spaces around it.
    type: text("type")
      ?.split(",")
      .map((t) => t.trim())
      .join(","),
    kind: text("kind") as Query<"/api/v1/snapshots/{snapshot_id}/search">["kind"],
    sort,
    order,
    mtime_after: text("mtime_after"),
    mtime_before: text("mtime_before"),
    atime_after: text("atime_after"),
    atime_before: text("atime_before"),
  };
  const data = useApi(active ? api.search(snapshot.snapshot_id, params) : null);
  const rows = data.data?.entries ?? [];
  useEffect(() => {
    if (data.data) announce(`${count(data.data.total)} found`);
  }, [data.data]);

  return (
    <div class="search">
      <SearchForm key={q.toString()} path={path} q={q} />
      {badSize ? (
        <p class="error" role="alert">
          {badSize}
        </p>
      ) : null}
      <ErrorBox error={data.error} notFound={`There is no directory ${path.text} in snapshot #${snapshot.snapshot_id}.`} />
      <Loading when={data.loading} what="matches" />
      {data.data ? (
        <>
          <table class="results" aria-label="Matches">
            <SortableHead
              columns={COLUMNS}
              sort={sort}
              order={order}
              onSort={(key, o) => navigate({ sort: key === "size" ? null : key, order: o, offset: null })}
            />
            <tbody>
              {rows.map((e) => (
                <tr key={e.path_b64 ?? e.path} class={e.kind}>
                  <td>
                    <KindIcon kind={e.kind} />
                    {e.name}
                  </td>
                  <td class="path">
                    <Link
                      to={{ view: "explorer", ...pathPatch(e.kind === "dir" ? entryRef(e) : parent(entryRef(e))), offset: null }}
                      title="Open in the explorer"
                    >
                      {e.path}
                    </Link>
                  </td>
                  {/* Sorts and size filters take an entry's own size; a directory's tree is told beside it. */}
                  <td class="num">
                    {bytes(e.size)}
                    {e.kind === "dir" ? <span class="muted small below">{bytes(e.bytes)} below</span> : null}
                  </td>
                  <td class="num">{e.kind === "dir" ? <span class="muted small below">{bytes(e.allocated)} below</span> : bytes(e.allocated)}</td>
                  <TimeCells entry={e} scanSeconds={snapshot.started_at} />
                  <td>{e.user ?? e.uid}</td>
                  <td>{e.group ?? e.gid}</td>
                </tr>
              ))}
            </tbody>
          </table>
          {rows.length === 0 ? <p class="muted">Nothing matches.</p> : null}
          <Pager offset={offset} shown={rows.length} total={data.data.total} limit={PAGE} />
          <p class="muted small">
            {count(data.data.total)} {data.data.total === 1 ? "match" : "matches"}; sorted by {SORT_WORDS[sort]}, {order === "asc" ? "ascending" : "descending"}.
          </p>
        </>
      ) : null}
    </div>
  );
}

function SearchForm({ path, q }: { path: PathRef; q: URLSearchParams }) {
  const initial: Record<string, string> = { under: path.b64 ? "" : path.text };
  for (const f of FIELDS) initial[f] = q.get(f) ?? "";
  initial.match = choice(q, "match", ["substring", "glob", "regex"], "substring");
  initial.field = choice(q, "field", ["name", "path"], "name");
  initial.kind = choice(q, "kind", ["", "file", "dir", "symlink"], "");
  initial.ignore_case = q.get("ignore_case") === "true" ? "true" : "";
  const { values, bind, check } = useFields(initial);
  const submit = (e: Event) => {
    e.preventDefault();
    const patch: Record<string, string | null> = { offset: null };
    for (const f of FIELDS) patch[f] = values[f].trim() || null;
    // Nothing to filter by: everything below the directory.
    patch.go = FIELDS.some((f) => patch[f]) ? null : "1";
    const under = values.under.trim();
    if (under && under !== path.text) Object.assign(patch, pathPatch({ text: under.length > 1 ? under.replace(/\/+$/, "") : under }));
    navigate(patch);
  };
  return (
    <form class="filters" onSubmit={submit} role="search" aria-label="Search the snapshot">
      <div class="row">
        <label class="grow">
          Find <input {...bind("q")} type="search" placeholder="part of a name, *.tar or ^core\.\d+$ (or only the filters below)" autoFocus />
        </label>
        <label>
          as{" "}
          <select {...bind("match")}>
            <option value="substring">substring</option>
            <option value="glob">glob</option>
            <option value="regex">regex</option>
          </select>
        </label>
        <label>
          in{" "}
          <select {...bind("field")}>
            <option value="name">name</option>
            <option value="path">path</option>
          </select>
        </label>
        <label title="Match upper and lower case alike (RESULTS finds results.txt)">
          <input {...check("ignore_case")} /> ignore case
        </label>
        <button type="submit">Search</button>
      </div>
      <div class="row">
        <label class="grow">
          Under <input {...bind("under")} placeholder={path.text} />
        </label>
        <label>
          Size ≥ <input {...bind("min_size")} placeholder="e.g. 1G" size={7} />
        </label>
        <label>
          ≤ <input {...bind("max_size")} size={7} />
        </label>
        <label>
          Owner <input {...bind("user")} placeholder="name or uid" size={10} />
        </label>
        <label>
          Group <input {...bind("group")} size={10} />
        </label>
        <label>
          Kind{" "}
          <select {...bind("kind")}>
            <option value="">any</option>
            <option value="file">files</option>
            <option value="dir">directories</option>
            <option value="symlink">symbolic links</option>
          </select>
        </label>
        <label title="File types, separated by commas: files of any of them">
          Types <input {...bind("type")} placeholder="e.g. h5, nc, fits" size={12} />
        </label>
      </div>
      <div class="row">
        <label>
          Modified after <input {...bind("mtime_after")} type="date" />
        </label>
        <label>
          before <input {...bind("mtime_before")} type="date" />
        </label>
        <label>
          Accessed after <input {...bind("atime_after")} type="date" />
        </label>
        <label>
          before <input {...bind("atime_before")} type="date" />
        </label>
      </div>
    </form>
  );
}
