// The API's answers (see /api/v1/openapi.json) and one way to ask for them.

export interface Snapshot {
  snapshot_id: number;
  filesystem_label: string;
  root_path: string;
  root_path_b64?: string;
  hosts: string[];
  ranks: number;
  scanner_version: string;
  started_at: number;
  started_at_ns?: number;
  finished_at: number;
  /** For a scoped token: the entries and bytes within its prefixes only. */
  entries: number;
  /** Absent for a scoped token. */
  errors?: number;
  apparent_bytes: number;
  /** The scan's options ("" for a full scan), e.g. "--max-depth=2 --exclude=.snapshot". */
  scan_options?: string;
}

/** What the token may read (`GET /api/v1/access`): an admin reads everything (`["/"]`). */
export interface Access {
  name: string | null;
  admin: boolean;
  prefixes: string[];
  /** Whether the API needs a token; asked without one, the answer says only this. */
  token_required?: boolean;
}

export interface Totals {
  bytes: number;
  allocated: number;
  entries: number;
  files: number;
  dirs: number;
  max_mtime_ns: number;
  max_atime_ns: number;
}

/** One entry: a directory carries its tree's totals, a file its own size. */
export interface Entry extends Totals {
  name: string;
  name_b64?: string;
  path: string;
  path_b64?: string;
  kind: string;
  size: number;
  uid: number;
  gid: number;
  mode: number;
  nlink: number;
  mtime_ns: number;
  atime_ns: number;
  user?: string;
  group?: string;
  symlink_target?: string;
  /** What could not be read: the failed call and its errno. */
  error?: { op: string; errno: number };
}

export interface Children {
  snapshot_id: number;
  path: string;
  path_b64?: string;
  directory: Totals;
  total: number;
  limit: number;
  offset: number;
  children: Entry[];
}

export interface Listing {
  snapshot_id: number;
  path: string;
  limit: number;
  offset: number;
  entries: Entry[];
}

export interface Tile {
  name: string;
  name_b64?: string;
  kind: string;
  bytes: number;
  files: number;
  uid?: number;
  user?: string;
  type?: string;
  mtime_ns?: number;
  count?: number;
  children?: Tile[];
}

export interface Treemap {
  snapshot_id: number;
  path: string;
  path_b64?: string;
  depth: number;
  max_children: number;
  size: "bytes" | "files";
  root: Tile;
}

export interface UsageItem {
  id?: number;
  name: string;
  entries: number;
  files: number;
  bytes: number;
  allocated: number;
}

export interface Usage {
  snapshot_id: number;
  by: string;
  limit: number;
  offset: number;
  items: UsageItem[];
}

export interface Bucket {
  bucket: number;
  label: string;
  files: number;
  bytes: number;
  allocated: number;
}

export interface Histogram {
  snapshot_id: number;
  of: string;
  buckets: Bucket[];
}

export interface Change {
  name: string;
  name_b64?: string;
  status: "added" | "removed" | "changed";
  kind: string;
  bytes_from: number;
  bytes_to: number;
  files_from: number;
  files_to: number;
}

export interface Growth {
  from: number;
  to: number;
  path: string;
  path_b64?: string;
  summary: {
    changed: number;
    added: number;
    added_bytes: number;
    added_files: number;
    removed: number;
    removed_bytes: number;
    removed_files: number;
  };
  limit: number;
  offset: number;
  changes: Change[];
  /** Why the comparison may mislead (e.g. the scans had different options). */
  warnings?: string[];
}

export interface OwnerChange {
  id: number;
  name: string;
  status: string;
  bytes_from: number;
  bytes_to: number;
  files_from: number;
  files_to: number;
}

export interface OwnerGrowth {
  from: number;
  to: number;
  by: string;
  owners: OwnerChange[];
}

export interface HistoryPoint {
  snapshot_id: number;
  started_at: number;
  bytes: number;
  allocated: number;
  entries: number;
  files: number;
  dirs: number;
  max_mtime_ns: number;
  scan_options?: string;
}

export interface History {
  path: string;
  path_b64?: string;
  filesystem_label?: string;
  root_path?: string;
  points: HistoryPoint[];
  /** Why the series may mislead (e.g. scans with different options). */
  warnings?: string[];
}

/** An error the API answered with: its status and the message saying what was wrong. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
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

export type Params = Record<string, string | number | undefined | null>;

export function apiUrl(route: string, params: Params = {}): string {
  const query = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== "") query.set(key, String(value));
  }
  const qs = query.toString();
  return `/api/v1/${route}${qs ? `?${qs}` : ""}`;
}

async function request(route: string, params: Params, signal?: AbortSignal): Promise<Response> {
  const headers: Record<string, string> = {};
  const bearer = token();
  if (bearer) headers.Authorization = `Bearer ${bearer}`;
  let response: Response;
  try {
    response = await fetch(apiUrl(route, params), { headers, signal });
  } catch (e) {
    if ((e as Error).name === "AbortError") throw e;
    throw new ApiError(0, "the API cannot be reached; is storage-api running?");
  }
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`;
    try {
      const body = (await response.json()) as { message?: string };
      if (body.message) message = body.message;
    } catch {
      // Not JSON: keep the status line.
    }
    throw new ApiError(response.status, message);
  }
  return response;
}

export async function getJson<T>(route: string, params: Params = {}, signal?: AbortSignal): Promise<T> {
  return (await request(route, params, signal)).json() as Promise<T>;
}

/**
 * Fetches a file from the API (with the token, which a plain link could not send) and saves it,
 * only once the whole body has arrived: a body the server aborts (or the network cuts) is an
 * error, and nothing is saved. `progress` hears the bytes received so far.
 */
export async function download(route: string, params: Params, filename: string, progress?: (received: number) => void): Promise<void> {
  const response = await request(route, params);
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
