// Comparing two snapshots: what grew, appeared and disappeared below a directory (drill down
// into any changed directory), growth per owner, and the directory's history across snapshots.
import { useState } from "preact/hooks";
import { comparable, useAccess } from "./access";
import { api, type Snapshot } from "./api";
import { type Column, ErrorBox, Head, Warnings, KindIcon, Link, Loading, Pager, SortableHead, sortRows, type Direction } from "./components";
import { useApi } from "./data";
import { bytes, count, dateSeconds, deltaBytes, deltaCount } from "./format";
import { join, pathParams, type PathRef } from "./paths";
import { choice, intParam, navigate, pathPatch } from "./route";
import { Breadcrumbs } from "./Explorer";

const PAGE = 200;

/** The snapshot before `to` of the same filesystem, the usual thing to compare with. */
export function previousOf(to: Snapshot, all: Snapshot[]): Snapshot | undefined {
  return all
    .filter((s) => comparable(s, to) && (s.started_at < to.started_at || (s.started_at === to.started_at && s.snapshot_id < to.snapshot_id)))
    .sort((a, b) => b.started_at - a.started_at || b.snapshot_id - a.snapshot_id)[0];
}

function snapshotLabel(s: Snapshot): string {
  return `#${s.snapshot_id} ${s.filesystem_label} ${dateSeconds(s.started_at)}`;
}

function Delta({ value, format }: { value: number; format: (n: number) => string }) {
  return <span class={value > 0 ? "grew" : value < 0 ? "shrank" : "muted"}>{format(value)}</span>;
}

type ChangeKey = "name" | "status" | "bytes_from" | "bytes_to" | "delta" | "files_delta";

export function Compare({ snapshots, to, root, path, q }: { snapshots: Snapshot[]; to: Snapshot; root: PathRef; path: PathRef; q: URLSearchParams }) {
  const access = useAccess();
  // Only snapshots of the same filesystem (label and root) compare: growth of anything else is
  // every entry added or removed.
  const others = snapshots.filter((x) => x.snapshot_id !== to.snapshot_id && comparable(x, to));
  const fromId = intParam(q, "from", previousOf(to, snapshots)?.snapshot_id ?? 0);
  const from = others.find((s) => s.snapshot_id === fromId);
  const refused = q.get("from") !== null && !from ? snapshots.find((s) => s.snapshot_id === fromId && s.snapshot_id !== to.snapshot_id) : undefined;
  const offset = intParam(q, "offset", 0);
  const by = choice(q, "by", ["user", "group"], "user");
  const growth = useApi(from ? api.growth({ from: from.snapshot_id, to: to.snapshot_id, ...pathParams(path), limit: PAGE, offset }) : null);
  // Growth per owner covers the whole snapshot: for admins only.
  const owners = useApi(from && access.admin ? api.ownerGrowth({ from: from.snapshot_id, to: to.snapshot_id, by }) : null);
  const history = useApi(api.history({ ...pathParams(path), snapshot: to.snapshot_id }));
  const optioned = history.data?.points.some((p) => p.scan_options) ?? false;
  const [sort, setSort] = useState<[ChangeKey, Direction]>(["delta", "desc"]);
  const changes = growth.data?.changes ?? [];
  const key = (c: (typeof changes)[number]): number | string => {
    switch (sort[0]) {
      case "name":
        return c.name;
      case "status":
        return c.status;
      case "bytes_from":
        return c.bytes_from;
      case "bytes_to":
        return c.bytes_to;
      case "files_delta":
        return c.files_to - c.files_from;
      default:
        return c.bytes_to - c.bytes_from;
    }
  };
  const columns: Column<ChangeKey>[] = [
    { key: "name", label: "Name", sortable: true },
    { key: "status", label: "Change", sortable: true },
    { key: "bytes_from", label: "Before", numeric: true, sortable: true },
    { key: "bytes_to", label: "After", numeric: true, sortable: true },
    { key: "delta", label: "Growth", numeric: true, sortable: true },
    { key: "files_delta", label: "Files ±", numeric: true, sortable: true },
  ];
  const rows = sortRows(changes, key, sort[1]);
  // Links are made from the directory the answer is about, which lags the URL while loading.
  const base: PathRef = growth.data ? { text: growth.data.path, b64: growth.data.path_b64 } : path;
  const s = growth.data?.summary;
  return (
    <div class="compare">
      <form class="filters" aria-label="Snapshots to compare" onSubmit={(e) => e.preventDefault()}>
        {others.length ? (
          <div class="row">
            <label>
              From{" "}
              <select name="from" value={from ? String(from.snapshot_id) : ""} onChange={(e) => navigate({ from: (e.target as HTMLSelectElement).value, offset: null })}>
                {from ? null : <option value="">choose a snapshot</option>}
                {others.map((x) => (
                  <option key={x.snapshot_id} value={String(x.snapshot_id)}>
                    {snapshotLabel(x)}
                  </option>
                ))}
              </select>
            </label>
            <span>
              to <strong>{snapshotLabel(to)}</strong> <span class="muted">(the snapshot chosen above)</span>
            </span>
          </div>
        ) : (
          <p class="muted" data-testid="nothing-to-compare">
            There is no other snapshot of {to.filesystem_label} at {to.root_path} to compare #{to.snapshot_id} with. Snapshots compare only with
            scans of the same filesystem (the same label and root).
          </p>
        )}
      </form>
      {refused ? (
        <p class="error" role="alert">
          Snapshot #{refused.snapshot_id} ({refused.filesystem_label} at {refused.root_path}) is not of the same filesystem as #{to.snapshot_id} ({to.filesystem_label}{" "}
          at {to.root_path}), so the two cannot be compared.{others.length ? " Choose one above." : ""}
        </p>
      ) : null}
      <Breadcrumbs path={path} root={root} view="compare" />
      <ErrorBox error={growth.error} notFound={`${path.text} is in neither snapshot.`} />
      <Loading when={growth.loading} what="the changes" />
      <Warnings items={growth.data?.warnings} label="About this comparison" />
      {s ? (
        <p class="summary" data-testid="growth-summary">
          {count(s.added)} added (<Delta value={s.added_bytes} format={deltaBytes} />, {deltaCount(s.added_files)} files) · {count(s.removed)} removed (
          <Delta value={-s.removed_bytes} format={deltaBytes} />, {deltaCount(-s.removed_files)} files) · {count(s.changed)} changed
        </p>
      ) : null}
      {growth.data ? (
        <>
          <h2>Growth below {path.text}</h2>
          <table class="changes" aria-label="Changes per entry">
            <SortableHead columns={columns} sort={sort[0]} order={sort[1]} onSort={(k, o) => setSort([k, o])} />
            <tbody>
              {rows.map((c) => (
                <tr key={c.name_b64 ?? c.name} class={c.status}>
                  <td>
                    <KindIcon kind={c.kind} />
                    {c.kind === "dir" && c.status === "changed" ? (
                      <Link to={{ ...pathPatch(join(base, c.name, c.name_b64)), offset: null }} title="Compare inside this directory">
                        {c.name}
                      </Link>
                    ) : (
                      c.name
                    )}
                  </td>
                  <td>{c.status}</td>
                  <td class="num">{c.status === "added" ? "" : bytes(c.bytes_from)}</td>
                  <td class="num">{c.status === "removed" ? "" : bytes(c.bytes_to)}</td>
                  <td class="num">
                    <Delta value={c.bytes_to - c.bytes_from} format={deltaBytes} />
                  </td>
                  <td class="num">
                    <Delta value={c.files_to - c.files_from} format={deltaCount} />
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
          {rows.length === 0 ? <p class="muted">Nothing changed here.</p> : null}
          <Pager offset={offset} shown={rows.length} limit={PAGE} />
        </>
      ) : null}
      {from && access.admin ? (
        <section aria-label="Growth per owner">
          <h2>
            Growth per{" "}
            <select value={by} aria-label="Owner kind" onChange={(e) => navigate({ by: (e.target as HTMLSelectElement).value })}>
              <option value="user">user</option>
              <option value="group">group</option>
            </select>{" "}
            <span class="muted small">(whole snapshot)</span>
          </h2>
          <ErrorBox error={owners.error} />
          <Loading when={owners.loading} what="owners" />
          {owners.data ? (
            <table class="owners" aria-label={`Growth per ${by}`}>
              <Head columns={[by === "user" ? "User" : "Group", ["Before", "num"], ["After", "num"], ["Growth", "num"], ["Files ±", "num"]]} sorted="Growth" />
              <tbody>
                {sortRows(owners.data.owners, (o) => o.bytes_to - o.bytes_from, "desc").map((o) => (
                  <tr key={o.id}>
                    <td>{o.name || `${by === "user" ? "uid" : "gid"} ${o.id}`}</td>
                    <td class="num">{bytes(o.bytes_from)}</td>
                    <td class="num">{bytes(o.bytes_to)}</td>
                    <td class="num">
                      <Delta value={o.bytes_to - o.bytes_from} format={deltaBytes} />
                    </td>
                    <td class="num">
                      <Delta value={o.files_to - o.files_from} format={deltaCount} />
                    </td>
                  </tr>
                ))}
              </tbody>
            </table>
          ) : null}
        </section>
      ) : null}
      <section aria-label="History">
        <h2>History of {path.text}</h2>
        <ErrorBox error={history.error} notFound={`No snapshot of this filesystem has ${path.text}.`} />
        <Warnings items={history.data?.warnings} label="About this history" />
        {history.data ? (
          <table class="history">
            <Head columns={["Snapshot", "Scanned", ["Size", "num"], ["Change", "num"], ["Files", "num"], ...(optioned ? ["Scan options"] : [])]} />
            <tbody>
              {history.data.points.map((p, i, all) => (
                <tr key={p.snapshot_id} class={p.snapshot_id === to.snapshot_id ? "current" : undefined}>
                  <td>
                    <Link to={{ snapshot: p.snapshot_id, offset: null }}>#{p.snapshot_id}</Link>
                  </td>
                  <td>{dateSeconds(p.started_at)}</td>
                  <td class="num">{bytes(p.bytes)}</td>
                  <td class="num">{i > 0 ? <Delta value={p.bytes - all[i - 1].bytes} format={deltaBytes} /> : ""}</td>
                  <td class="num">{count(p.files)}</td>
                  {optioned ? <td>{p.scan_options || "full scan"}</td> : null}
                </tr>
              ))}
            </tbody>
          </table>
        ) : null}
      </section>
    </div>
  );
}
