// Treemap layouts, run in a Web Worker (treemap.worker.ts): squarified (d3-hierarchy, about a
// millisecond for thousands of cells) or Voronoi (d3-voronoi-treemap, quadratic in the children
// of one directory, so the API caps them). Both are deterministic for the same data: the Voronoi
// seeds come from a PRNG seeded by the directory's path.
import { hierarchy, treemap, treemapSquarify, type HierarchyNode } from "d3-hierarchy";
import { voronoiTreemap } from "d3-voronoi-treemap";
import type { Tile } from "./api";

export type Layout = "squarified" | "voronoi";

/** What a tile's area is: apparent bytes, bytes on disk, or files. */
export type AreaBy = "bytes" | "allocated" | "files";

export interface LayoutRequest {
  id: number;
  root: Tile;
  width: number;
  height: number;
  layout: Layout;
  size: AreaBy;
  seed: string;
}

/** One laid-out tile: a rectangle (squarified) or a polygon (Voronoi). */
export interface Cell {
  /** Names from the laid-out directory down to this tile. */
  names: string[];
  namesB64: (string | null)[];
  depth: number;
  kind: string;
  value: number;
  tile: Omit<Tile, "children">;
  hasChildren: boolean;
  rect?: [number, number, number, number];
  points?: [number, number][];
  /** Where a label fits: its anchor and the room it has. */
  label?: { x: number; y: number; width: number };
}

export interface LayoutResult {
  id: number;
  layout: Layout;
  cells: Cell[];
  ms: number;
}

/** Height of a directory's title band in the squarified layout. */
export const HEADER = 16;

function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function seedOf(s: string): number {
  let h = 2166136261;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 16777619);
  return h >>> 0;
}

/** Drops empty tiles: they have no area, and zero weights upset the Voronoi layout. */
function pruned(t: Tile, size: AreaBy): Tile | null {
  const kids = (t.children ?? []).map((c) => pruned(c, size)).filter((c): c is Tile => c !== null);
  if (kids.length === 0 && t[size] <= 0) return null;
  return { ...t, children: kids };
}

function centroid(points: [number, number][]): [number, number, number] {
  let a = 0;
  let x = 0;
  let y = 0;
  for (let i = 0; i < points.length; i++) {
    const [x0, y0] = points[i];
    const [x1, y1] = points[(i + 1) % points.length];
    const f = x0 * y1 - x1 * y0;
    a += f;
    x += (x0 + x1) * f;
    y += (y0 + y1) * f;
  }
  a /= 2;
  if (Math.abs(a) < 1e-9) return [points[0][0], points[0][1], 0];
  return [x / (6 * a), y / (6 * a), Math.abs(a)];
}

export function layout(req: LayoutRequest): LayoutResult {
  const started = performance.now();
  const root = pruned(req.root, req.size) ?? { ...req.root, children: [] };
  const h: HierarchyNode<Tile> = hierarchy(root, (d) => (d.children && d.children.length ? d.children : null))
    .sum((d) => (d.children && d.children.length ? 0 : Math.max(d[req.size], 0)))
    .sort((a, b) => (b.value ?? 0) - (a.value ?? 0));
  const { width, height } = req;
  if (req.layout === "voronoi") {
    voronoiTreemap()
      .clip([
        [0, 0],
        [0, height],
        [width, height],
        [width, 0],
      ])
      .prng(mulberry32(seedOf(req.seed)))
      .minWeightRatio(0.005)
      .convergenceRatio(0.01)
      .maxIterationCount(60)(h as HierarchyNode<unknown>);
  } else {
    treemap<Tile>()
      .tile(treemapSquarify)
      .size([width, height])
      .paddingInner(1)
      .paddingOuter(1)
      .paddingTop((n) => (n.depth > 0 ? HEADER : 1))
      .round(true)(h);
  }
  const cells: Cell[] = [];
  for (const n of h.descendants()) {
    if (n.depth === 0) continue;
    const chain = n.ancestors().reverse().slice(1);
    const { children, ...tile } = n.data;
    const cell: Cell = {
      names: chain.map((a) => a.data.name),
      namesB64: chain.map((a) => a.data.name_b64 ?? null),
      depth: n.depth,
      kind: n.data.kind,
      value: n.value ?? 0,
      tile,
      hasChildren: (children?.length ?? 0) > 0,
    };
    if (req.layout === "voronoi") {
      const polygon = (n as unknown as { polygon?: [number, number][] }).polygon;
      if (!polygon || polygon.length < 3) continue;
      cell.points = polygon.map(([x, y]) => [Math.round(x * 10) / 10, Math.round(y * 10) / 10]);
      const [cx, cy, area] = centroid(cell.points);
      if (area > 900) cell.label = { x: cx, y: cy, width: Math.sqrt(area) };
    } else {
      const r = n as unknown as { x0: number; y0: number; x1: number; y1: number };
      const w = r.x1 - r.x0;
      const hh = r.y1 - r.y0;
      if (w < 1 || hh < 1) continue;
      cell.rect = [r.x0, r.y0, w, hh];
      if (w > 36 && hh > 13) cell.label = { x: r.x0 + 3, y: r.y0 + 12, width: w - 6 };
    }
    cells.push(cell);
  }
  return { id: req.id, layout: req.layout, cells, ms: performance.now() - started };
}
