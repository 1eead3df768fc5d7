// The treemap of the current directory: data from the API (children capped per directory, the
// rest folded into one "N smaller items" tile), laid out in a Web Worker, drawn as SVG. A click
// on a directory drills down into it; the first level is reachable with Tab and Enter.
import { useEffect, useMemo, useRef, useState } from "preact/hooks";
import { api, type Snapshot } from "./api";
import { colorKey, colorOf, type ColorBy } from "./colors";
import { ErrorBox, Loading } from "./components";
import { useApi } from "./data";
import { age, bytes, counted, dateNs, percent } from "./format";
import type { Cell, Layout, LayoutRequest, LayoutResult } from "./layout";
import { join, pathParams, type PathRef } from "./paths";
import { choice, intParam, navigate, pathPatch } from "./route";

export const LAYOUTS = ["squarified", "voronoi"] as const;
export const COLOR_BY = ["type", "category", "owner", "age"] as const;
export const SIZE_BY = ["bytes", "files"] as const;
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
    depth,
    max_children: MAX_CHILDREN[layoutKind],
    size: sizeBy,
  }));
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
  const height = Math.round(Math.min(560, Math.max(300, width * 0.45)));
  const [result, setResult] = useState<(LayoutResult & { base: PathRef }) | null>(null);
  const [layoutError, setLayoutError] = useState<string | null>(null);
  const [hover, setHover] = useState<Cell | null>(null);
  useEffect(() => {
    if (!data.data || width < 50) return;
    let live = true;
    setLayoutError(null);
    const laidOut: PathRef = { text: data.data.path, b64: data.data.path_b64 };
    layoutInWorker({
      root: data.data.root,
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
    const parts = [c.names[c.names.length - 1], bytes(t.bytes), counted(t.files, "file", "files")];
    if (t.user) parts.push(t.user);
    if (t.mtime_ns !== undefined) parts.push(`newest ${dateNs(t.mtime_ns)}`);
    return parts.join(", ");
  };
  const options = (key: string, values: readonly string[], current: string, label: string) => (
    <label>
      {label}{" "}
      <select value={current} onChange={(e) => navigate({ [key]: (e.target as HTMLSelectElement).value })}>
        {values.map((v) => (
          <option key={v} value={v}>
            {v}
          </option>
        ))}
      </select>
    </label>
  );
  const stale = result === null || data.loading;
  return (
    <section class="treemap" aria-label="Treemap">
      <div class="toolbar">
        {options("layout", LAYOUTS, layoutKind, "Layout")}
        {options("color", COLOR_BY, colorBy, "Colour by")}
        {options("size", SIZE_BY, sizeBy, "Area by")}
        {options("depth", ["1", "2", "3"], String(depth), "Levels")}
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
      <p class="hover muted" data-testid="treemap-hover">
        {hover
          ? `${describe(hover)}${hover.tile.mtime_ns !== undefined ? ` (${age(hover.tile.mtime_ns, snapshot.started_at)} before the scan)` : ""}`
          : "Click a directory to go into it; hover for details."}
      </p>
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
