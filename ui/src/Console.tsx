// The query console, for admins: one SELECT over the snapshot tables, run by the API as its
// read-only ClickHouse user; presets for the common questions, written for the snapshot shown.
// The statement lives in the URL (a query is a link). Results sort by any column in the page;
// every row downloads as CSV, TSV or Markdown, saved only once it arrived whole.
import { useEffect, useMemo, useState } from "preact/hooks";
import { api, ApiError, CutShort, download, type ConsoleAnswer, type Snapshot } from "./api";
import { plainError, useAccess } from "./access";
import { ErrorBox, Loading, SortableHead, announce, type Column, type Direction } from "./components";
import { useApi } from "./data";
import { bytes, count } from "./format";
import { intParam, navigate } from "./route";

/** Rows the page shows; a download has them all. */
const SHOWN = 1000;

type Format = "csv" | "tsv" | "markdown";
const EXTENSIONS: Record<Format, string> = { csv: "csv", tsv: "tsv", markdown: "md" };

/** Whether a ClickHouse type holds numbers (sorted as numbers, aligned right). */
export function numericType(type: string): boolean {
  return /^(Nullable\()?(U?Int|Float|Decimal)/.test(type);
}

/** The order of two cells of a column: NULL first, numbers by value (exactly, however large), text by code point. */
export function compareCells(a: string | null, b: string | null, numeric: boolean): number {
  if (a === b) return 0;
  if (a === null) return -1;
  if (b === null) return 1;
  if (numeric) {
    if (/^-?\d+$/.test(a) && /^-?\d+$/.test(b)) {
      const [x, y] = [BigInt(a), BigInt(b)];
      return x < y ? -1 : x > y ? 1 : 0;
    }
    const [x, y] = [Number(a), Number(b)];
    if (!Number.isNaN(x) && !Number.isNaN(y) && x !== y) return x < y ? -1 : 1;
  }
  return a < b ? -1 : 1;
}

export function Console({ snapshot, q }: { snapshot: Snapshot; q: URLSearchParams }) {
  const sql = q.get("sql") ?? "";
  const days = intParam(q, "days", 365, 0, 36_500);
  const presets = useApi(api.consolePresets(snapshot.snapshot_id, { days }));
  const [run, setRun] = useState(0);
  const answer = useApi(sql.trim() ? api.console({ sql, limit: SHOWN }) : null, run);
  const [text, setText] = useState(sql);
  useEffect(() => setText(sql), [sql]);
  const submit = (e?: Event) => {
    e?.preventDefault();
    if (text === sql) setRun((n) => n + 1);
    else navigate({ sql: text || null });
  };
  const preset = (id: string) => {
    const p = presets.data?.presets.find((p) => p.id === id);
    if (p) navigate({ sql: p.sql });
  };
  useEffect(() => {
    if (answer.data) announce(`${count(answer.data.total_rows)} rows`);
  }, [answer.data]);

  return (
    <div class="console">
      <form class="filters" onSubmit={submit} aria-label="Query console">
        <div class="row">
          <label>
            Preset{" "}
            <select value="" onChange={(e) => preset((e.currentTarget as HTMLSelectElement).value)} aria-label="Preset">
              <option value="">choose a question…</option>
              {(presets.data?.presets ?? []).map((p) => (
                <option key={p.id} value={p.id}>
                  {p.title}
                </option>
              ))}
            </select>
          </label>
          <label title="N of the presets about files not modified or not accessed for N days">
            N days <input type="number" min={0} max={36500} value={days} size={5} onChange={(e) => navigate({ days: (e.currentTarget as HTMLInputElement).value || null })} />
          </label>
          <span class="muted small">
            One SELECT over the snapshot tables (entries, dir_rollups, owner_usage, type_usage, principals, …; this snapshot is {snapshot.snapshot_id}), run read-only with the
            server's limits.
          </span>
        </div>
        <textarea
          class="sql"
          aria-label="SQL"
          spellcheck={false}
          rows={Math.min(16, Math.max(4, text.split("\n").length + 1))}
          value={text}
          placeholder={`SELECT path, size FROM entries WHERE snapshot_id = ${snapshot.snapshot_id} ORDER BY size DESC LIMIT 10`}
          onInput={(e) => setText((e.currentTarget as HTMLTextAreaElement).value)}
          onKeyDown={(e) => {
            if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) submit();
          }}
        />
        <div class="row">
          <button type="submit" disabled={!text.trim()}>
            Run
          </button>
          <span class="muted small">Ctrl+Enter runs it.</span>
        </div>
      </form>
      <ErrorBox error={presets.error} />
      <ErrorBox error={answer.error} />
      <Loading when={answer.loading} what="the answer" />
      {answer.data && sql ? <Result key={sql} answer={answer.data} sql={sql} snapshot={snapshot} /> : null}
    </div>
  );
}

function Result({ answer, sql, snapshot }: { answer: ConsoleAnswer; sql: string; snapshot: Snapshot }) {
  const [sort, setSort] = useState<{ key: string; order: Direction } | null>(null);
  const columns: Column<string>[] = answer.columns.map((c, i) => {
    const numeric = numericType(c.type);
    return { key: String(i), label: c.name, numeric, sortable: true, firstOrder: numeric ? "desc" : "asc" };
  });
  const order = useMemo(() => {
    const rows = answer.rows.map((_, i) => i);
    const n = Number(sort?.key);
    // A sort of the answer before (another statement's columns) is no sort of this one.
    if (!sort || !(n < answer.columns.length)) return rows;
    const numeric = numericType(answer.columns[n].type);
    const sign = sort.order === "asc" ? 1 : -1;
    return rows.sort((a, b) => sign * compareCells(answer.rows[a][n], answer.rows[b][n], numeric) || a - b);
  }, [answer, sort]);
  const [downloading, setDownloading] = useState<string | null>(null);
  const [failed, setFailed] = useState<string | null>(null);
  const access = useAccess();
  const save = async (format: Format) => {
    setFailed(null);
    setDownloading(`Preparing the ${format.toUpperCase()}…`);
    try {
      await download(api.consoleDownload(sql, format), `console-${snapshot.filesystem_label}-${snapshot.snapshot_id}.${EXTENSIONS[format]}`, (received) =>
        setDownloading(`Downloading… ${bytes(received)}`),
      );
      setDownloading(null);
    } catch (e) {
      setDownloading(null);
      setFailed(e instanceof CutShort ? e.message : e instanceof ApiError ? `The download failed: ${plainError(e, access)}` : `The download failed: ${String(e)}`);
    }
  };
  const bad = new Set(answer.binary?.map((b) => `${b.row}:${b.column}`) ?? []);
  return (
    <>
      <div class="row exports">
        <span data-testid="console-count">
          {count(answer.total_rows)} {answer.total_rows === 1 ? "row" : "rows"}
          {answer.truncated ? `, the first ${count(answer.rows.length)} shown (a download has them all)` : ""} · {answer.elapsed_seconds.toFixed(2)} s
        </span>
        {(["csv", "tsv", "markdown"] as Format[]).map((f) => (
          <button key={f} type="button" onClick={() => save(f)}>
            Download {f === "markdown" ? "Markdown" : f.toUpperCase()}
          </button>
        ))}
        <span class="muted" role="status">
          {downloading ?? ""}
        </span>
      </div>
      {failed ? (
        <p class="error" role="alert" data-testid="download-failed">
          {failed}
        </p>
      ) : null}
      <div class="scroll">
        <table class="results" aria-label="Console result">
          <SortableHead columns={columns} sort={sort?.key ?? ""} order={sort?.order ?? "asc"} onSort={(key, o) => setSort({ key, order: o })} />
          <tbody>
            {order.map((r) => (
              <tr key={r}>
                {answer.rows[r].map((cell, c) => (
                  <td key={c} class={columns[c].numeric ? "num" : undefined} title={bad.has(`${r}:${c}`) ? "not UTF-8: its bytes are kept in downloads" : undefined}>
                    {cell === null ? <span class="muted">NULL</span> : cell}
                  </td>
                ))}
              </tr>
            ))}
          </tbody>
        </table>
      </div>
      {answer.rows.length === 0 ? <p class="muted">No rows.</p> : null}
    </>
  );
}
