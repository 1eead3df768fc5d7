// The URL holds the whole state of a view (snapshot, path, view, sort, filters), so any view can
// be bookmarked or linked. Navigation pushes a new URL; Back and Forward work as usual.
import { useEffect, useState } from "preact/hooks";
import type { PathRef } from "./paths";

export type View = "explorer" | "search" | "reports" | "compare" | "console";
export const VIEWS: View[] = ["explorer", "search", "reports", "compare", "console"];

export type Patch = Record<string, string | number | undefined | null>;

const listeners = new Set<() => void>();
window.addEventListener("popstate", () => listeners.forEach((f) => f()));

export function current(): URLSearchParams {
  return new URLSearchParams(location.search);
}

/** The URL that `patch` makes of the current one (a null or empty value removes the key). */
export function href(patch: Patch, base: URLSearchParams = current()): string {
  const next = new URLSearchParams(base);
  for (const [key, value] of Object.entries(patch)) {
    if (value === undefined) continue;
    if (value === null || value === "") next.delete(key);
    else next.set(key, String(value));
  }
  next.sort();
  const qs = next.toString();
  return qs ? `?${qs}` : location.pathname;
}

export function navigate(patch: Patch, options: { replace?: boolean } = {}) {
  const url = href(patch);
  if (url === location.search) return;
  if (options.replace) history.replaceState(null, "", url);
  else history.pushState(null, "", url);
  listeners.forEach((f) => f());
}

/** Re-renders on every navigation; returns the current query. */
export function useRoute(): URLSearchParams {
  const [, setTick] = useState(0);
  useEffect(() => {
    const f = () => setTick((t) => t + 1);
    listeners.add(f);
    return () => {
      listeners.delete(f);
    };
  }, []);
  return current();
}

export function view(q: URLSearchParams): View {
  const v = q.get("view") as View | null;
  return v && VIEWS.includes(v) ? v : "explorer";
}

export function pathOf(q: URLSearchParams, fallback: PathRef): PathRef {
  const b64 = q.get("path_b64");
  const text = q.get("path");
  if (b64) return { text: text ?? fallback.text, b64 };
  return text ? { text } : fallback;
}

/** The URL keys of a path (both set, so a stale one is always replaced). */
export function pathPatch(p: PathRef): Patch {
  return { path: p.text, path_b64: p.b64 ?? null };
}

/** A link that navigates within the page (keeps Ctrl-click and middle-click opening a tab). */
export function onLink(patch: Patch) {
  return (e: MouseEvent) => {
    if (e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
    e.preventDefault();
    navigate(patch);
  };
}

export function intParam(q: URLSearchParams, key: string, fallback: number, min = 0, max = Number.MAX_SAFE_INTEGER): number {
  const raw = q.get(key);
  if (raw === null) return fallback;
  const n = Number(raw);
  return Number.isInteger(n) && n >= min && n <= max ? n : fallback;
}

export function choice<T extends string>(q: URLSearchParams, key: string, options: readonly T[], fallback: T): T {
  const v = q.get(key) as T | null;
  return v && options.includes(v) ? v : fallback;
}
