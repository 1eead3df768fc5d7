// Treemap colours: by file type and by owner a stable hue per key; by category a fixed colour
// for each built-in category (a stable hue for others); by age a sequential scale.

export type ColorBy = "type" | "category" | "owner" | "age";

function hash(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

/** A stable colour for a key (a file type, an owner). */
export function keyColor(key: string): string {
  const h = hash(key);
  const hue = h % 360;
  const sat = 45 + ((h >>> 9) % 25);
  const light = 48 + ((h >>> 17) % 14);
  return `hsl(${hue} ${sat}% ${light}%)`;
}

export const DIR_COLOR = "hsl(215 14% 62%)";
export const OTHER_COLOR = "hsl(0 0% 66%)";

/** The colours of the built-in categories (deploy/config/categories.conf), told apart at a glance. */
export const CATEGORY_COLORS: Record<string, string> = {
  tabular: "#4e79a7",
  scientific: "#f28e2b",
  images: "#e15759",
  documents: "#76b7b2",
  code: "#59a14f",
  binaries: "#edc948",
  archives: "#b07aa1",
  configuration: "#ff9da7",
  checkpoints: "#9c755f",
  logs: "#8cd17d",
  other: "hsl(0 0% 78%)",
};

/** Age classes by days before the scan, newest first (the bounds of the age histograms). */
export const AGE_CLASSES: { upTo: number; label: string; color: string }[] = [
  { upTo: 7, label: "under a week", color: "#1a9850" },
  { upTo: 30, label: "under a month", color: "#66bd63" },
  { upTo: 90, label: "1-3 months", color: "#a6d96a" },
  { upTo: 365, label: "3-12 months", color: "#fee08b" },
  { upTo: 730, label: "1-2 years", color: "#fdae61" },
  { upTo: 1825, label: "2-5 years", color: "#f46d43" },
  { upTo: Infinity, label: "5 years or more", color: "#a50026" },
];
export const FUTURE_COLOR = "#5e4fa2";

export function ageClass(mtimeNs: number, scanSeconds: number): number {
  const days = (scanSeconds - mtimeNs / 1e9) / 86400;
  if (days < 0) return -1;
  return AGE_CLASSES.findIndex((c) => days < c.upTo);
}

export interface Colorable {
  kind: string;
  type?: string;
  category?: string;
  user?: string;
  uid?: number;
  mtime_ns?: number;
  /** For a directory drawn without its children: what dominates below it, per colouring. */
  dominant?: Partial<Record<ColorBy, string>>;
}

/**
 * The key of each colouring that holds most of `tile`'s area below it, from the tiles the API
 * gave (the smaller items folded into "other" are not known apart, and count for nothing).
 */
export function dominantKeys(tile: Colorable & { children?: (Colorable & { children?: unknown[] })[] }, value: (t: Colorable) => number, scanSeconds: number): Partial<Record<ColorBy, string>> {
  const out: Partial<Record<ColorBy, string>> = {};
  for (const by of ["type", "category", "owner"] as const) {
    const sums = new Map<string, number>();
    const walk = (t: Colorable & { children?: unknown[] }) => {
      const kids = (t.children ?? []) as (Colorable & { children?: unknown[] })[];
      if (t.kind === "dir" && kids.length > 0) kids.forEach(walk);
      else if (t.kind !== "other" && t.kind !== "dir") {
        const key = colorKey(t, by, scanSeconds);
        sums.set(key, (sums.get(key) ?? 0) + value(t));
      }
    };
    (tile.children ?? []).forEach(walk);
    let best: [string, number] | undefined;
    for (const entry of sums) if (!best || entry[1] > best[1]) best = entry;
    if (best && best[1] > 0) out[by] = best[0];
  }
  return out;
}

/** The key a cell is coloured by, shown in the legend. */
export function colorKey(c: Colorable, by: ColorBy, scanSeconds: number): string {
  if (c.kind === "other") return "smaller items";
  switch (by) {
    case "type":
      if (c.kind === "dir") return c.dominant?.type ?? "directory";
      if (c.kind !== "file") return c.kind;
      return c.type ? `.${c.type}` : "no extension";
    case "category":
      if (c.kind === "dir") return c.dominant?.category ?? "directory";
      if (c.kind !== "file") return c.kind;
      return c.category ?? "other";
    case "owner":
      if (c.kind === "dir" && c.dominant?.owner) return c.dominant.owner;
      return c.user ?? (c.uid !== undefined ? `uid ${c.uid}` : "unknown");
    case "age": {
      if (c.mtime_ns === undefined) return "unknown";
      const k = ageClass(c.mtime_ns, scanSeconds);
      return k < 0 ? "in the future" : AGE_CLASSES[k].label;
    }
  }
}

export function colorOf(key: string, by: ColorBy): string {
  if (key === "smaller items") return OTHER_COLOR;
  if ((by === "type" || by === "category") && key === "directory") return DIR_COLOR;
  if (by === "category") return CATEGORY_COLORS[key] ?? keyColor(key);
  if (by === "age") {
    if (key === "in the future") return FUTURE_COLOR;
    return AGE_CLASSES.find((c) => c.label === key)?.color ?? OTHER_COLOR;
  }
  return keyColor(key);
}
