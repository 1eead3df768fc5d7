// What the signed-in token may read (`GET /api/v1/access`), and what follows from it: where a
// snapshot opens, how far up navigation goes, which snapshots compare, and how the API's refusals
// read as plain sentences.
import { createContext } from "preact";
import { useContext } from "preact/hooks";
import type { Access, ApiError, Snapshot } from "./api";
import { within, type PathRef } from "./paths";

/** An API without tokens, or an admin token: everything. */
export const EVERYTHING: Access = { name: null, admin: true, prefixes: ["/"], token_required: false };

export const AccessContext = createContext<Access>(EVERYTHING);

export function useAccess(): Access {
  return useContext(AccessContext);
}

export function rootOf(s: Snapshot): PathRef {
  return s.root_path_b64 ? { text: s.root_path, b64: s.root_path_b64 } : { text: s.root_path };
}

/**
 * The directories of a snapshot the token reads from, in the order of its prefixes: the root for
 * an admin; else each prefix within the root, or the root itself where it lies within a prefix.
 */
export function tops(s: Snapshot, access: Access): PathRef[] {
  const root = rootOf(s);
  if (access.admin) return [root];
  const out: PathRef[] = [];
  for (const prefix of access.prefixes) {
    const p: PathRef = { text: prefix };
    const top = within(root, p) ? root : within(p, root) ? p : undefined;
    if (top && !out.some((t) => t.text === top.text && t.b64 === top.b64)) out.push(top);
  }
  return out;
}

/** "/a", "/a and /b", "/a, /b and /c". */
export function listing(items: string[]): string {
  return items.length < 2 ? (items[0] ?? "") : `${items.slice(0, -1).join(", ")} and ${items[items.length - 1]}`;
}

/** Whether two snapshots are of the same filesystem: the same label and the same root. */
export function comparable(a: Snapshot, b: Snapshot): boolean {
  return a.filesystem_label === b.filesystem_label && a.root_path === b.root_path && (a.root_path_b64 ?? "") === (b.root_path_b64 ?? "");
}

function sentence(s: string): string {
  const t = s.trim();
  if (!t) return t;
  const first = t[0].toUpperCase() + t.slice(1);
  return /[.!?]$/.test(first) ? first : `${first}.`;
}

/**
 * An error as a user reads it: no status codes, no parameter names. `notFound` says what a 404
 * means where it happened (the API's own words otherwise).
 */
export function plainError(error: ApiError, access: Access, notFound?: string): string {
  const scope = access.admin ? "" : ` Your token reads only below ${listing(access.prefixes)}.`;
  switch (error.status) {
    case 0:
      return sentence(error.message);
    case 401:
      return "Your token was not accepted. Sign in again with a valid token.";
    case 403:
      return /admin/i.test(error.message)
        ? `This covers the whole snapshot, so it needs an administrator's token.${scope}`
        : `Your token does not give access to this.${scope}`;
    case 404:
      return notFound ?? sentence(`Not found: ${error.message}`);
    case 400:
      return error.message;
    case 414:
    case 431:
      return "The request is too long for the server; shorten it (a statement of the console takes at most 16 KiB).";
    default:
      // Stopped by the read-only user's limits: the message says which and what to narrow.
      if (error.kind === "limited") return sentence(error.message);
      return error.status >= 500
        ? sentence(`The server could not answer (${error.message}); try again later`)
        : sentence(error.message);
  }
}
