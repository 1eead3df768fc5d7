// The duplicate files report: groups of files of one size, by status (confirmed copies,
// candidates not verified yet, candidates that only shared a size), each copy's links leading
// to its directory; and, for confirmed copies, the bytes they waste per directory and owner.
import { useState } from "preact/hooks";
import { api, type DuplicateCopy, type DuplicateGroup, type Snapshot, type Wasted } from "./api";
import { Bar, ErrorBox, Head, Link, Loading, Pager } from "./components";
import { useApi } from "./data";
import { bytes, count, counted } from "./format";
import { parent, type PathRef } from "./paths";
import { choice, intParam, navigate, pathPatch } from "./route";

const STATUSES = [
  ["confirmed", "Confirmed copies"],
  ["unverified", "Not verified yet"],
  ["false_positive", "Same size only"],
] as const;
type Status = (typeof STATUSES)[number][0];
const PAGE = 50;

const linkRef = (l: { path: string; path_b64?: string }): PathRef => ({ text: l.path, b64: l.path_b64 });

export function DuplicatesReport({ snapshot, q }: { snapshot: Snapshot; q: URLSearchParams }) {
  const status = choice<Status>(
    q,
    "status",
    STATUSES.map(([s]) => s),
    "confirmed",
  );
  const sameName = q.get("same_name") === "true";
  const offset = intParam(q, "offset", 0);
  const data = useApi(api.duplicates(snapshot.snapshot_id, { status, same_name: sameName, limit: PAGE, offset }));
  const summary = data.data?.summary ?? [];
  const of = (s: Status) => summary.find((x) => x.status === s);
  const confirmed = of("confirmed");
  const unverified = of("unverified");
  return (
    <>
      <div class="toolbar">
        <label>
          Show{" "}
          <select name="status" value={status} onChange={(e) => navigate({ status: (e.target as HTMLSelectElement).value, offset: null })}>
            {STATUSES.map(([s, label]) => (
              <option key={s} value={s}>
                {label} {of(s) ? `(${count(of(s)!.files)} files)` : ""}
              </option>
            ))}
          </select>
        </label>
        <label>
          <input type="checkbox" name="same_name" checked={sameName} onChange={(e) => navigate({ same_name: (e.target as HTMLInputElement).checked ? "true" : null, offset: null })} /> same name too
        </label>
      </div>
      <ErrorBox error={data.error} />
      <Loading when={data.loading} what="duplicates" />
      {data.data ? (
        <>
          <p class="summary" data-testid="duplicates-summary">
            {confirmed && confirmed.groups > 0
              ? `${counted(confirmed.groups, "group", "groups")} of identical files (${counted(confirmed.files, "file", "files")}) waste ${bytes(confirmed.wasted)} on disk beyond their first copies.`
              : "No identical files confirmed."}{" "}
            {unverified && unverified.files > 0
              ? `${counted(unverified.files, "file", "files")} of one size with another are not verified yet: storage-scan --hash-duplicates ${snapshot.snapshot_id} reads them.`
              : "Every candidate is verified."}
          </p>
          {data.data.groups.length === 0 ? (
            <p class="muted empty">No groups here.</p>
          ) : (
            <table class="duplicates" aria-label="Duplicate groups">
              <Head columns={[["Size", "num"], ["Files", "num"], ["Wasted", "num"], "Copies"]} />
              <tbody>
                {data.data.groups.map((g) => (
                  <GroupRow key={`${g.size}:${g.hash ?? ""}:${g.name_b64 ?? g.name ?? ""}`} group={g} largest={data.data!.groups[0].wasted} snapshot={snapshot} status={status} sameName={sameName} />
                ))}
              </tbody>
            </table>
          )}
          <Pager offset={offset} shown={data.data.groups.length} total={data.data.total} limit={PAGE} />
          {status === "confirmed" && confirmed && confirmed.groups > 0 ? (
            <div class="wasted">
              <WastedTable snapshot={snapshot} by="dir" sameName={sameName} />
              <WastedTable snapshot={snapshot} by="user" sameName={sameName} />
            </div>
          ) : null}
        </>
      ) : null}
    </>
  );
}

/** Files of a group listed at once when all are asked for. */
const ALL_COPIES = 1000;

function GroupRow(props: { group: DuplicateGroup; largest: number; snapshot: Snapshot; status: Status; sameName: boolean }) {
  const { group, largest } = props;
  const [all, setAll] = useState(false);
  const every = useApi(
    all
      ? api.duplicateCopies(props.snapshot.snapshot_id, {
          status: props.status,
          size: group.size,
          hash: group.hash,
          same_name: props.sameName,
          name: props.sameName && group.name_b64 === undefined ? group.name : undefined,
          name_b64: props.sameName ? group.name_b64 : undefined,
          limit: ALL_COPIES,
        })
      : null,
  );
  const copies: DuplicateCopy[] = every.data?.copies ?? group.copies;
  const listed = copies.length;
  return (
    <tr>
      <td class="num">{bytes(group.size)}</td>
      <td class="num">{count(group.files)}</td>
      <td class="num size">
        <span>{bytes(group.wasted)}</span>
        <Bar part={group.wasted} whole={largest} />
      </td>
      <td class="copies">
        {group.name !== undefined ? <div class="muted small">name {group.name}</div> : null}
        <ul>
          {copies.map((c, i) => (
            <li key={c.links[0]?.path_b64 ?? c.links[0]?.path}>
              {c.links.map((l, k) => (
                <span key={l.path_b64 ?? l.path}>
                  {k > 0 ? <span class="muted"> = </span> : null}
                  <Link to={{ view: "explorer", ...pathPatch(parent(linkRef(l))), offset: null }} title="Open its directory">
                    {l.path}
                  </Link>
                </span>
              ))}
              <span class="muted small">
                {" "}
                {c.user ?? `uid ${c.uid}`}
                {i === 0 && group.hash ? " · first copy" : ""}
              </span>
              {c.problem ? <span class="problem small"> not read: {c.problem}</span> : null}
            </li>
          ))}
          {group.files > listed ? (
            <li class="muted">
              and {count(group.files - listed)} more{" "}
              {!all ? (
                <button type="button" class="link" onClick={() => setAll(true)}>
                  list {group.files > ALL_COPIES ? `the first ${count(ALL_COPIES)}` : "them all"}
                </button>
              ) : every.loading ? (
                "(loading…)"
              ) : null}
            </li>
          ) : null}
        </ul>
      </td>
    </tr>
  );
}

function WastedTable({ snapshot, by, sameName }: { snapshot: Snapshot; by: "dir" | "user"; sameName: boolean }) {
  const data = useApi(api.wasted(snapshot.snapshot_id, { by, same_name: sameName, limit: 20 }));
  const items: Wasted["items"] = data.data?.items ?? [];
  const most = items.reduce((m, i) => Math.max(m, i.wasted), 0);
  return (
    <section aria-label={by === "dir" ? "Wasted by directory" : "Wasted by owner"}>
      <h3>{by === "dir" ? "Wasted by directory" : "Wasted by owner"}</h3>
      <ErrorBox error={data.error} />
      <table class={`wasted-${by}`}>
        <Head columns={[by === "dir" ? "Directory" : "Owner", ["Copies", "num"], ["Wasted", "num"]]} />
        <tbody>
          {items.map((i) => (
            <tr key={i.path_b64 ?? i.path ?? String(i.uid)}>
              <td>
                {by === "dir" ? (
                  <Link to={{ view: "explorer", ...pathPatch({ text: i.path ?? "/", b64: i.path_b64 }), offset: null }}>{i.path}</Link>
                ) : (
                  (i.user ?? `uid ${i.uid}`)
                )}
              </td>
              <td class="num">{count(i.copies)}</td>
              <td class="num size">
                <span>{bytes(i.wasted)}</span>
                <Bar part={i.wasted} whole={most} />
              </td>
            </tr>
          ))}
        </tbody>
      </table>
      {data.data && data.data.total > items.length ? <p class="muted small">and {count(data.data.total - items.length)} more</p> : null}
    </section>
  );
}
