// The API: its answers' types, generated from the OpenAPI document it serves (api.gen.ts), and
// one typed function per route, which the views call (through `useApi` in data.ts, or
// `download`). A route, a parameter or a field that the document does not have does not compile.
import type { Paths } from "./api.gen";
import type { DirectoryParams } from "./paths";

export type {
  Access,
  Bucket,
  DuplicateCopy,
  DuplicateGroup,
  Duplicates,
  Change,
  ChangeSummary,
  Children,
  ConsoleAnswer,
  ConsolePreset,
  Entry,
  EntryError,
  EntryKind,
  ErrorOp,
  Growth,
  Health,
  Histogram,
  History,
  HistoryPoint,
  Listing,
  OwnerChange,
  OwnerGrowth,
  Snapshot,
  SnapshotList,
  Tile,
  TileKind,
  Totals,
  Treemap,
  Usage,
  UsageItem,
  Wasted,
  WastedItem,
} from "./api.gen";

export type Route = keyof Paths;
/** The query parameters of a route. */
export type Query<R extends Route> = Paths[R]["query"];
/** The JSON body of a route's 200. */
export type Answer<R extends Route> = Paths[R]["content"] extends { "application/json": infer T } ? T : never;

/** A GET of JSON: its URL (which names the request: the same URL, the same answer) and the answer. */
export interface Call<T> {
  readonly url: string;
  get(signal?: AbortSignal): Promise<T>;
}

/** A GET of a file to save (see `download`). */
export interface Download {
  readonly url: string;
}

/** An error the API answered with: its status and the message saying what was wrong. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
    /** The error's kind as the API names it (`bad_request`, `limited`, …), when it said. */
    readonly kind?: string,
  ) {
    super(message);
  }
}

/** A download whose body did not arrive whole. */
export class CutShort extends Error {}

const TOKEN_KEY = "storage-tracker-token";

/** The bearer token for sites that configure tokens; kept for this browser tab only. */
export function token(): string {
  return sessionStorage.getItem(TOKEN_KEY) ?? "";
}

export function setToken(value: string) {
  if (value) sessionStorage.setItem(TOKEN_KEY, value);
  else sessionStorage.removeItem(TOKEN_KEY);
}

/** The URL of `route` with its path parameters filled in and its query (empty values left out). */
function urlOf<R extends Route>(route: R, path: Paths[R]["path"], params: Query<R>): string {
  const filled = route.replace(/\{(\w+)\}/g, (_, name: string) => encodeURIComponent(String((path as Record<string, string | number>)[name])));
  const query = new URLSearchParams();
  for (const [key, value] of Object.entries(params as Record<string, string | number | boolean | undefined | null>)) {
    if (value !== undefined && value !== null && value !== "") query.set(key, String(value));
  }
  const qs = query.toString();
  return `${filled}${qs ? `?${qs}` : ""}`;
}

/**
 * The query of a route whose document marks `path` required: `path_b64` may stand in its place
 * (OpenAPI 3.0 cannot say "one of two parameters"; the document says it in words).
 */
type AtDirectory<R extends Route> = Omit<Query<R>, "path" | "path_b64"> & DirectoryParams;

function json<R extends Route>(route: R, path: Paths[R]["path"], params: Query<R>): Call<Answer<R>> {
  const url = urlOf(route, path, params);
  return { url, get: async (signal) => (await request(url, signal)).json() as Promise<Answer<R>> };
}

/** Every route of the API, one function each. */
export const api = {
  health: () => json("/health", {}, {}),
  access: () => json("/api/v1/access", {}, {}),
  snapshots: (params: Query<"/api/v1/snapshots">) => json("/api/v1/snapshots", {}, params),
  snapshot: (id: number) => json("/api/v1/snapshots/{snapshot_id}", { snapshot_id: id }, {}),
  children: (id: number, params: Query<"/api/v1/snapshots/{snapshot_id}/children">) => json("/api/v1/snapshots/{snapshot_id}/children", { snapshot_id: id }, params),
  entry: (id: number, params: Query<"/api/v1/snapshots/{snapshot_id}/entry">) => json("/api/v1/snapshots/{snapshot_id}/entry", { snapshot_id: id }, params),
  treemap: (id: number, params: Query<"/api/v1/snapshots/{snapshot_id}/treemap">) => json("/api/v1/snapshots/{snapshot_id}/treemap", { snapshot_id: id }, params),
  top: (id: number, params: Query<"/api/v1/snapshots/{snapshot_id}/top">) => json("/api/v1/snapshots/{snapshot_id}/top", { snapshot_id: id }, params),
  usage: (id: number, params: Query<"/api/v1/snapshots/{snapshot_id}/usage">) => json("/api/v1/snapshots/{snapshot_id}/usage", { snapshot_id: id }, params),
  duplicates: (id: number, params: Query<"/api/v1/snapshots/{snapshot_id}/duplicates">) => json("/api/v1/snapshots/{snapshot_id}/duplicates", { snapshot_id: id }, params),
  duplicateCopies: (id: number, params: Query<"/api/v1/snapshots/{snapshot_id}/duplicates/copies">) => json("/api/v1/snapshots/{snapshot_id}/duplicates/copies", { snapshot_id: id }, params),
  wasted: (id: number, params: Query<"/api/v1/snapshots/{snapshot_id}/duplicates/wasted">) => json("/api/v1/snapshots/{snapshot_id}/duplicates/wasted", { snapshot_id: id }, params),
  categories: () => json("/api/v1/categories", {}, {}),
  histograms: (id: number, params: Query<"/api/v1/snapshots/{snapshot_id}/histograms">) => json("/api/v1/snapshots/{snapshot_id}/histograms", { snapshot_id: id }, params),
  /** Stale files, a JSON page (largest first). */
  stale: (id: number, params: Omit<Query<"/api/v1/snapshots/{snapshot_id}/stale">, "format">) => json("/api/v1/snapshots/{snapshot_id}/stale", { snapshot_id: id }, params),
  /** Every stale file as CSV, streamed in path order. */
  staleCsv: (id: number, params: Omit<Query<"/api/v1/snapshots/{snapshot_id}/stale">, "format">): Download => ({
    url: urlOf("/api/v1/snapshots/{snapshot_id}/stale", { snapshot_id: id }, { ...params, format: "csv" }),
  }),
  search: (id: number, params: Query<"/api/v1/snapshots/{snapshot_id}/search">) => json("/api/v1/snapshots/{snapshot_id}/search", { snapshot_id: id }, params),
  /** A page of one SELECT's rows (admins). */
  console: (params: Omit<Query<"/api/v1/console">, "format">) => json("/api/v1/console", {}, params),
  /** Every row of one SELECT, as CSV, TSV or Markdown, streamed. */
  consoleDownload: (sql: string, format: "csv" | "tsv" | "markdown"): Download => ({ url: urlOf("/api/v1/console", {}, { sql, format }) }),
  consolePresets: (id: number, params: Query<"/api/v1/snapshots/{snapshot_id}/console/presets">) =>
    json("/api/v1/snapshots/{snapshot_id}/console/presets", { snapshot_id: id }, params),
  /** The directory and everything below it for ncdu. */
  ncdu: (id: number, params: Query<"/api/v1/snapshots/{snapshot_id}/export/ncdu">): Download => ({
    url: urlOf("/api/v1/snapshots/{snapshot_id}/export/ncdu", { snapshot_id: id }, params),
  }),
  history: (params: AtDirectory<"/api/v1/history">) => json("/api/v1/history", {}, params as Query<"/api/v1/history">),
  growth: (params: AtDirectory<"/api/v1/growth">) => json("/api/v1/growth", {}, params as Query<"/api/v1/growth">),
  ownerGrowth: (params: Query<"/api/v1/growth/owners">) => json("/api/v1/growth/owners", {}, params),
};

async function request(url: string, signal?: AbortSignal): Promise<Response> {
  const headers: Record<string, string> = {};
  const bearer = token();
  if (bearer) headers.Authorization = `Bearer ${bearer}`;
  let response: Response;
  try {
    response = await fetch(url, { headers, signal });
  } catch (e) {
    if ((e as Error).name === "AbortError") throw e;
    throw new ApiError(0, "the API cannot be reached; is storage-api running?");
  }
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`;
    let kind: string | undefined;
    try {
      const body = (await response.json()) as { message?: string; error?: string };
      if (body.message) message = body.message;
      kind = body.error;
    } catch {
      // Not JSON: keep the status line.
    }
    throw new ApiError(response.status, message, kind);
  }
  return response;
}

/**
 * Fetches a file from the API (with the token, which a plain link could not send) and saves it,
 * only once the whole body has arrived: a body the server aborts (or the network cuts) is an
 * error, and nothing is saved. `progress` hears the bytes received so far.
 */
export async function download(file: Download, filename: string, progress?: (received: number) => void): Promise<void> {
  const response = await request(file.url);
  const type = response.headers.get("Content-Type") ?? "application/octet-stream";
  const parts: Uint8Array[] = [];
  try {
    if (response.body) {
      const reader = response.body.getReader();
      let received = 0;
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        parts.push(value);
        received += value.length;
        progress?.(received);
      }
    } else {
      parts.push(new Uint8Array(await response.arrayBuffer()));
    }
  } catch (e) {
    throw new CutShort(`The download was cut short: ${(e as Error).message || "the connection failed"}. Nothing was saved; try again.`);
  }
  const blob = new Blob(parts as BlobPart[], { type });
  const url = URL.createObjectURL(blob);
  const a = document.createElement("a");
  a.href = url;
  a.download = filename;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}
