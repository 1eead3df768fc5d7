// Small pieces shared by the views. File names are only ever rendered as text: Preact sets text
// nodes, never innerHTML, so `<img onerror=...>` in a name is shown, not run.
import type { ComponentChildren } from "preact";
import { useState } from "preact/hooks";
import { plainError, useAccess } from "./access";
import type { ApiError } from "./api";
import { age, count, dateNs } from "./format";
import { href, onLink, type Patch } from "./route";

/** Says something to screen readers (the sort order of a table, a finished search). */
export function announce(message: string) {
  const region = document.getElementById("announce");
  if (!region) return;
  region.textContent = "";
  // A change after a tick is announced even when the text repeats.
  setTimeout(() => (region.textContent = message), 50);
}

export function Link(props: { to: Patch; children: ComponentChildren; class?: string; title?: string; label?: string }) {
  return (
    <a href={href(props.to)} onClick={onLink(props.to)} class={props.class} title={props.title} aria-label={props.label}>
      {props.children}
    </a>
  );
}

/** An error in plain words (see `plainError`); `notFound` says what a 404 means here. */
export function ErrorBox({ error, notFound }: { error?: ApiError; notFound?: string }) {
  const access = useAccess();
  if (!error) return null;
  return (
    <p class="error" role="alert" data-status={error.status || undefined}>
      {plainError(error, access, notFound)}
    </p>
  );
}

/** Warnings that come with an answer (e.g. two scans that did not cover the same tree). */
export function Warnings({ items, label }: { items?: string[]; label: string }) {
  if (!items?.length) return null;
  return (
    <ul class="warnings" role="note" aria-label={label}>
      {items.map((w) => (
        <li key={w}>⚠ {w.charAt(0).toUpperCase() + w.slice(1)}</li>
      ))}
    </ul>
  );
}

export function Loading({ when, what }: { when: boolean; what: string }) {
  return when ? (
    <p class="muted loading" role="status">
      Loading {what}…
    </p>
  ) : null;
}

export type Direction = "asc" | "desc";

export interface Column<K extends string> {
  key: K;
  label: string;
  numeric?: boolean;
  sortable?: boolean;
  /** The order of the first click (default: ascending for names, descending for the rest). */
  firstOrder?: Direction;
}

/**
 * A header row whose sortable columns are buttons; the sorted column carries `aria-sort`, and a
 * change of sort is announced.
 */
export function SortableHead<K extends string>(props: {
  columns: Column<K>[];
  sort: K;
  order: Direction;
  onSort: (key: K, order: Direction) => void;
}) {
  return (
    <thead>
      <tr>
        {props.columns.map((c) => {
          const sorted = c.key === props.sort;
          const ariaSort = sorted ? (props.order === "asc" ? "ascending" : "descending") : c.sortable ? "none" : undefined;
          return (
            <th key={c.key} scope="col" class={c.numeric ? "num" : undefined} aria-sort={ariaSort}>
              {c.sortable ? (
                <button
                  type="button"
                  class="sort"
                  onClick={() => {
                    const order: Direction = sorted ? (props.order === "asc" ? "desc" : "asc") : (c.firstOrder ?? (c.key === "name" ? "asc" : "desc"));
                    props.onSort(c.key, order);
                    announce(`sorted by ${c.label}, ${order === "asc" ? "ascending" : "descending"}`);
                  }}
                >
                  {c.label}
                  <span class="arrow" aria-hidden="true">
                    {sorted ? (props.order === "asc" ? "▲" : "▼") : "↕"}
                  </span>
                </button>
              ) : (
                c.label
              )}
            </th>
          );
        })}
      </tr>
    </thead>
  );
}

/** A header row of columns that are not sortable; `sorted` marks the one the rows come in. */
export function Head(props: { columns: (string | [string, "num"])[]; sorted?: string }) {
  return (
    <thead>
      <tr>
        {props.columns.map((c) => {
          const [label, num] = typeof c === "string" ? [c, undefined] : c;
          return (
            <th key={label} scope="col" class={num} aria-sort={label === props.sorted ? "descending" : undefined}>
              {label}
            </th>
          );
        })}
      </tr>
    </thead>
  );
}

/** The modification and access cells of an entry: age before the scan, the date on hover. */
export function TimeCells({ entry, scanSeconds }: { entry: { max_mtime_ns: number; max_atime_ns: number }; scanSeconds: number }) {
  return (
    <>
      <td class="num" title={dateNs(entry.max_mtime_ns)}>
        {age(entry.max_mtime_ns, scanSeconds)}
      </td>
      <td class="num" title={dateNs(entry.max_atime_ns)}>
        {age(entry.max_atime_ns, scanSeconds)}
      </td>
    </>
  );
}

/** A bar showing `part` of `whole`, for size columns. */
export function Bar({ part, whole }: { part: number; whole: number }) {
  const pct = whole > 0 ? Math.max(0, Math.min(100, (100 * part) / whole)) : 0;
  return (
    <span class="bar" aria-hidden="true">
      <span class="fill" style={{ width: `${pct}%` }} />
    </span>
  );
}

/** "1–100 of 2,345" with Previous and Next. */
export function Pager(props: { offset: number; shown: number; total?: number; limit: number; pageKey?: string }) {
  const key = props.pageKey ?? "offset";
  const { offset, shown, total, limit } = props;
  if (offset === 0 && shown < limit) return null;
  const hasNext = total !== undefined ? offset + shown < total : shown === limit;
  return (
    <nav class="pager" aria-label="Pages">
      <span>
        {shown ? `${count(offset + 1)}–${count(offset + shown)}` : "none"}
        {total !== undefined ? ` of ${count(total)}` : ""}
      </span>
      {offset > 0 ? <Link to={{ [key]: Math.max(0, offset - limit) || null }}>Previous</Link> : null}
      {hasNext ? <Link to={{ [key]: offset + limit }}>Next</Link> : null}
    </nav>
  );
}

const ICON_PATHS: Record<string, string> = {
  dir: "M1 3h5l1.5 1.5H15v9H1z",
  file: "M3 1h6l4 4v10H3z M9 1v4h4",
  symlink: "M2 8h8 M7 5l3 3-3 3 M12 2v12",
  other: "M3 8h1 M7.5 8h1 M12 8h1",
};

/** A small drawn icon for an entry's kind (no icon font needed). */
export function KindIcon({ kind }: { kind: string }) {
  return (
    <svg class={`icon ${kind}`} viewBox="0 0 16 16" width="14" height="14" aria-hidden="true">
      <path d={ICON_PATHS[kind] ?? "M5 5h6v6H5z"} />
    </svg>
  );
}

/** Sorts rows on the client, for tables that arrive whole. */
export function sortRows<T>(rows: T[], key: (row: T) => number | string, order: Direction): T[] {
  const sign = order === "asc" ? 1 : -1;
  return [...rows].sort((a, b) => {
    const x = key(a);
    const y = key(b);
    return x < y ? -sign : x > y ? sign : 0;
  });
}

/**
 * The fields of a form, kept as the user types them and read on submit. Forms are remounted
 * (keyed by the URL) when the URL changes, so they always start from what the URL says.
 */
export function useFields(initial: Record<string, string>) {
  const [values, setValues] = useState(initial);
  const bind = (name: string) => {
    const update = (e: Event) => {
      const v = (e.currentTarget as HTMLInputElement | HTMLSelectElement).value;
      setValues((s) => ({ ...s, [name]: v }));
    };
    return { name, value: values[name] ?? "", onInput: update, onChange: update };
  };
  /** A checkbox whose field is "true" when ticked, "" when not. */
  const check = (name: string) => ({
    name,
    type: "checkbox" as const,
    checked: values[name] === "true",
    onChange: (e: Event) => {
      const on = (e.currentTarget as HTMLInputElement).checked;
      setValues((s) => ({ ...s, [name]: on ? "true" : "" }));
    },
  });
  return { values, bind, check };
}
