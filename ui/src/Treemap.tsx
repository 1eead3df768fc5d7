// The treemap of the current directory: data from the API (children capped per directory, the
// rest folded into one "N smaller items" tile; one level more than drawn, up to three, so that a
// directory of the deepest level is coloured by what dominates its children), laid out in a Web
// Worker, drawn as SVG. A click on a directory drills down into it; the first level is reachable with Tab and
// Enter. Hovering shows a tile's details in a panel (its path with a copy button, sizes, files,
// its share of its directory and of the view); a right-click pins the panel; the treemap can
// fill the screen.
import { useEffect, useMemo, useRef, useState } from "preact/hooks";
import { api, type Snapshot, type Tile } from "./api";
import { colorKey, colorOf, dominantKeys, type ColorBy } from "./colors";
import { ErrorBox, Loading } from "./components";
import { useApi } from "./data";
import { age, bytes, counted, dateNs, percent } from "./format";
import type { AreaBy, Cell, Layout, LayoutRequest, LayoutResult } from "./layout";
import { join, pathParams, type PathRef } from "./paths";
import { choice, intParam, navigate, pathPatch } from "./route";

export const LAYOUTS = ["squarified", "voronoi"] as const;
export const COLOR_BY = ["type", "category", "owner", "age"] as const;
export const SIZE_BY = ["bytes", "allocated", "files"] as const;
const SIZE_LABELS: Record<AreaBy, string> = { bytes: "size", allocated: "on disk", files: "files" };
/**
 * Levels fetched: one more than drawn, for what dominates below the deepest directories, up to
 * three in all (the tiles grow with the children kept per directory to the power of the levels).
 */
const FETCHED_LEVELS = 3;

/**
 * The tiles to draw, `levels` deep: each directory of the deepest level loses its children (the
 * extra level fetched), keeping what dominates below it.
 */
function cut(tile: Tile, levels: number, size: AreaBy, scanSeconds: number): Tile {
  if (levels > 0) return { ...tile, children: tile.children?.map((c) => cut(c, levels - 1, size, scanSeconds)) };
  if (tile.kind !== "dir" || !tile.children?.length) return tile;
  const dominant = dominantKeys(tile, (t) => (t as unknown as Tile)[size], scanSeconds);
  return { ...tile, children: undefined, dominant } as Tile;
}
/** Children kept per directory: Voronoi layouts grow quadratically with them. */
const MAX_CHILDREN: Record<Layout, number> = { squarified: 60, voronoi: 30 };

let worker: Worker | undefined;
let nextId = 1;
const waiting = new Map<number, (r: LayoutResult | { id: number; error: string }) => void>();

function layoutInWorker(req: Omit<LayoutRequest, "id">): Promise<LayoutResult> {
  if (!worker) {
    worker = new Worker(new URL("./treemap.worker.ts", import.meta.url), { type: "module" });
    worker.onmessage = (e: MessageEvent<LayoutResult | { id: number; error: string }>) => {
      waiting.get(e.data.id)?.(e.data);
      waiting.delete(e.data.id);
    };
  }
  const id = nextId++;
  return new Promise((resolve, reject) => {
    waiting.set(id, (r) => ("error" in r ? reject(new Error(r.error)) : resolve(r)));
    worker!.postMessage({ ...req, id });
  });
}

function cellPath(dir: PathRef, cell: Cell, upTo: number): PathRef {
  let p = dir;
  for (let i = 0; i < upTo; i++) p = join(p, cell.names[i], cell.namesB64[i] ?? undefined);
  return p;
}

/** Where a click on a cell leads: into a directory, or to a file's directory. */
function target(dir: PathRef, cell: Cell): PathRef | null {
  const levels = cell.kind === "dir" ? cell.names.length : cell.names.length - 1;
  return levels > 0 ? cellPath(dir, cell, levels) : null;
}

function fit(text: string, width: number): string {
  const room = Math.floor(width / 6.6);
  if (room < 3) return "";
  return text.length <= room ? text : `${text.slice(0, room - 1)}…`;
}

export function Treemap(props: { snapshot: Snapshot; path: PathRef; q: URLSearchParams }) {
  const { snapshot, path, q } = props;
  const layoutKind = choice(q, "layout", LAYOUTS, "squarified");
  const colorBy: ColorBy = choice(q, "color", COLOR_BY, "type");
  const sizeBy = choice(q, "size", SIZE_BY, "bytes");
  const depth = intParam(q, "depth", 2, 1, 3);
  const data = useApi(api.treemap(snapshot.snapshot_id, {
    ...pathParams(path),
    depth: Math.min(depth + 1, Math.max(depth, FETCHED_LEVELS)),
    max_children: MAX_CHILDREN[layoutKind],
    size: sizeBy,
  }));
  const section = useRef<HTMLElement>(null);
  const [full, setFull] = useState(false);
  useEffect(() => {
    const change = () => setFull(document.fullscreenElement === section.current);
    document.addEventListener("fullscreenchange", change);
    return () => document.removeEventListener("fullscreenchange", change);
  }, []);
  const toggleFull = () => {
    if (document.fullscreenElement) void document.exitFullscreen();
    else void section.current?.requestFullscreen?.();
  };
  const box = useRef<HTMLDivElement>(null);
  const [width, setWidth] = useState(0);
  useEffect(() => {
    const el = box.current;
    if (!el) return;
    const observer = new ResizeObserver(() => setWidth(Math.floor(el.clientWidth)));
    observer.observe(el);
    setWidth(Math.floor(el.clientWidth));
    return () => observer.disconnect();
  }, []);
  const height = full ? Math.max(300, window.innerHeight - 190) : Math.round(Math.min(560, Math.max(300, width * 0.45)));
  const [result, setResult] = useState<(LayoutResult & { base: PathRef }) | null>(null);
  const [layoutError, setLayoutError] = useState<string | null>(null);
  const [hover, setHover] = useState<Cell | null>(null);
  const [pinned, setPinned] = useState<Cell | null>(null);
  const [copied, setCopied] = useState(false);
  useEffect(() => setPinned(null), [path.text, path.b64, snapshot.snapshot_id]);
  useEffect(() => {
    if (!data.data || width < 50) return;
    let live = true;
    setLayoutError(null);
    const laidOut: PathRef = { text: data.data.path, b64: data.data.path_b64 };
    layoutInWorker({
      root: cut(data.data.root, depth, sizeBy, snapshot.started_at),
      width,
      height,
      layout: layoutKind,
      size: sizeBy,
      seed: `${snapshot.snapshot_id}:${path.b64 ?? path.text}`,
    }).then(
      (r) => live && setResult({ ...r, base: laidOut }),
      (e: Error) => live && setLayoutError(e.message),
    );
    return () => {
      live = false;
    };
  }, [data.data, width, height, layoutKind, sizeBy]);

  const legend = useMemo(() => {
    if (!result) return [];
    const totals = new Map<string, number>();
    let all = 0;
    for (const c of result.cells) {
      if (c.hasChildren) continue;
      const key = colorKey(c.tile, colorBy, snapshot.started_at);
      totals.set(key, (totals.get(key) ?? 0) + c.value);
      all += c.value;
    }
    return [...totals.entries()]
      .sort((a, b) => b[1] - a[1])
      .slice(0, 12)
      .map(([key, v]) => ({ key, share: percent(v, all) }));
  }, [result, colorBy]);

  // The tiles on screen may still be those of the previous directory while the next loads:
  // their targets are made from the directory they were laid out for.
  const base: PathRef = result ? result.base : path;
  const go = (cell: Cell) => {
    const to = target(base, cell);
    if (to) navigate(pathPatch(to));
  };
  const describe = (c: Cell) => {
    const t = c.tile;
    const parts = [c.names[c.names.length - 1], bytes(t.bytes), `${bytes(t.allocated)} on disk`, counted(t.files, "file", "files")];
    if (t.user) parts.push(t.user);
    if (t.mtime_ns !== undefined) parts.push(`newest ${dateNs(t.mtime_ns)}`);
    return parts.join(", ");
  };
  const options = (key: string, values: readonly string[], current: string, label: string, labels?: Record<string, string>) => (
    <label>
      {label}{" "}
      <select name={key} value={current} onChange={(e) => navigate({ [key]: (e.target as HTMLSelectElement).value })}>
        {values.map((v) => (
          <option key={v} value={v}>
            {labels?.[v] ?? v}
          </option>
        ))}
      </select>
    </label>
  );
  const shown = pinned ?? hover;
  useEffect(() => setCopied(false), [shown]);
  const total = result ? result.cells.filter((c) => c.depth === 1).reduce((s, c) => s + c.value, 0) : 0;
  const stale = result === null || data.loading;
  return (
    <section class={`treemap${full ? " full" : ""}`} aria-label="Treemap" ref={section}>
      <div class="toolbar">
        {options("layout", LAYOUTS, layoutKind, "Layout")}
        {options("color", COLOR_BY, colorBy, "Colour by")}
        {options("size", SIZE_BY, sizeBy, "Area by", SIZE_LABELS)}
        {options("depth", ["1", "2", "3"], String(depth), "Levels")}
        <button type="button" class="link" onClick={toggleFull} aria-pressed={full}>
          {full ? "Exit full screen" : "Full screen"}
        </button>
        <span class="muted" data-testid="layout-time">
          {result ? `${result.cells.length} tile${result.cells.length === 1 ? "" : "s"}, laid out in ${result.ms.toFixed(0)} ms` : ""}
        </span>
      </div>
      {/* A directory that is missing or not readable is said once, by the explorer's table. */}
      <ErrorBox error={data.error && data.error.status !== 404 && data.error.status !== 403 ? data.error : undefined} />
      {layoutError ? (
        <p class="error" role="alert">
          The treemap could not be laid out: {layoutError}
        </p>
      ) : null}
      <div ref={box} class={`canvas${stale ? " busy" : ""}`} style={{ height: `${height}px` }}>
        <Loading when={data.loading && !result} what="the treemap" />
        {result && width > 0 ? (
          <svg
            width={width}
            height={height}
            viewBox={`0 0 ${width} ${height}`}
            role="group"
            aria-label={`Treemap of ${base.text}, ${result.layout}, coloured by ${colorBy}`}
            data-layout={result.layout}
          >
            {result.cells.map((c) => {
              const key = colorKey(c.tile, colorBy, snapshot.started_at);
              const container = c.hasChildren;
              const fill = container ? undefined : colorOf(key, colorBy);
              const name = c.names[c.names.length - 1];
              const drill = target(base, c) !== null;
              return (
                <g
                  key={`${c.names.join("\u0000")}`}
                  class={`cell d${c.depth} ${c.kind}${container ? " container" : ""}${drill ? " drill" : ""}`}
                  data-name={name}
                  data-kind={c.kind}
                  tabIndex={c.depth === 1 && drill ? 0 : undefined}
                  role={drill ? "link" : undefined}
                  aria-label={c.depth === 1 ? describe(c) : undefined}
                  onClick={() => go(c)}
                  onKeyDown={(e) => {
                    if (e.key === "Enter" || e.key === " ") {
                      e.preventDefault();
                      go(c);
                    }
                  }}
                  onMouseEnter={() => setHover(c)}
                  onFocus={() => setHover(c)}
                  onContextMenu={(e) => {
                    e.preventDefault();
                    setPinned(pinned && pinned.names.join("/") === c.names.join("/") ? null : c);
                    setCopied(false);
                  }}
                >
                  {c.rect ? (
                    <rect x={c.rect[0]} y={c.rect[1]} width={c.rect[2]} height={c.rect[3]} fill={fill} />
                  ) : (
                    <polygon points={c.points!.map((p) => p.join(",")).join(" ")} fill={fill} />
                  )}
                  <title>{describe(c)}</title>
                  {c.label && (result.layout === "squarified" || (c.depth === 1 && !container)) ? (
                    <text
                      x={c.label.x}
                      y={c.label.y}
                      text-anchor={result.layout === "voronoi" ? "middle" : undefined}
                      class={container ? "head" : undefined}
                    >
                      {fit(name, c.label.width)}
                    </text>
                  ) : null}
                </g>
              );
            })}
            {result.layout === "voronoi" ? (
              // Directory outlines and names over their contents.
              <g class="outlines" aria-hidden="true">
                {result.cells
                  .filter((c) => c.hasChildren)
                  .map((c) => (
                    <polygon key={c.names.join("\u0000")} class={`d${c.depth}`} points={c.points!.map((p) => p.join(",")).join(" ")} />
                  ))}
                {result.cells
                  .filter((c) => c.hasChildren && c.depth === 1 && c.label)
                  .map((c) => (
                    <text key={c.names.join("\u0000")} x={c.label!.x} y={c.label!.y} text-anchor="middle" class="head">
                      {fit(c.names[0], c.label!.width)}
                    </text>
                  ))}
              </g>
            ) : null}
          </svg>
        ) : null}
      </div>
      {shown && result ? (
        <HoverPanel
          cell={shown}
          cells={result.cells}
          total={total}
          base={base}
          snapshot={snapshot}
          sizeBy={sizeBy}
          pinned={pinned !== null}
          copied={copied}
          onCopy={(text) => {
            void navigator.clipboard?.writeText(text).then(() => setCopied(true), () => setCopied(false));
          }}
          onUnpin={() => setPinned(null)}
        />
      ) : (
        <p class="hover muted" data-testid="treemap-hover">
          Click a directory to go into it; hover for details, right-click to pin them.
        </p>
      )}
      <ul class="legend" aria-label="Colours">
        {legend.map((l) => (
          <li key={l.key}>
            <span class="swatch" style={{ background: colorOf(l.key, colorBy) }} aria-hidden="true" />
            {l.key} <span class="muted">{l.share}</span>
          </li>
        ))}
      </ul>
    </section>
  );
}

/** The details of the tile under the pointer (or pinned): its path with a copy button, its sizes
 * and files, and its share of its directory and of the whole view. */
function HoverPanel(props: {
  cell: Cell;
  cells: Cell[];
  total: number;
  base: PathRef;
  snapshot: Snapshot;
  sizeBy: AreaBy;
  pinned: boolean;
  copied: boolean;
  onCopy: (text: string) => void;
  onUnpin: () => void;
}) {
  const { cell, base, snapshot } = props;
  const t = cell.tile;
  const path = cellPath(base, cell, t.kind === "other" ? cell.names.length - 1 : cell.names.length);
  const parentKey = cell.names.slice(0, -1).join("\u0000");
  const parentCell = props.cells.find((c) => c.names.join("\u0000") === parentKey && c.depth === cell.depth - 1);
  const parentValue = parentCell ? parentCell.value : props.total;
  const measure = SIZE_LABELS[props.sizeBy];
  return (
    <div class={`hover panel${props.pinned ? " pinned" : ""}`} data-testid="treemap-hover" role="status">
      <div class="path">
        <code>{t.kind === "other" ? `${path.text}/…` : path.text}</code>{" "}
        {t.kind !== "other" ? (
          <button type="button" class="link" onClick={() => props.onCopy(path.text)} title="Copy the path">
            {props.copied ? "copied" : "copy"}
          </button>
        ) : null}
        {props.pinned ? (
          <button type="button" class="link unpin" onClick={props.onUnpin}>
            unpin
          </button>
        ) : null}
      </div>
      <span>{bytes(t.bytes)}</span> · <span>{bytes(t.allocated)} on disk</span> · <span>{counted(t.files, "file", "files")}</span>
      {t.user ? <span> · {t.user}</span> : null}
      {t.mtime_ns !== undefined ? <span> · newest {dateNs(t.mtime_ns)} ({age(t.mtime_ns, snapshot.started_at)} before the scan)</span> : null}
      <span class="muted">
        {" "}
        · {percent(cell.value, parentValue)} of {parentCell ? "its directory" : "this directory"}
        {parentCell ? `, ${percent(cell.value, props.total)} of the view` : ""} ({measure})
      </span>
    </div>
  );
}
