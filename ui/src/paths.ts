// Paths as the API gives them: text where the bytes are UTF-8, with the raw bytes as base64
// (`*_b64`) where they are not. A path is sent back the same way it came.

export interface PathRef {
  text: string;
  b64?: string;
}

/** A directory as a request names it: as text, or as base64 of its bytes when it is not UTF-8. */
export type DirectoryParams = { path: string; path_b64?: never } | { path?: never; path_b64: string };

export function pathParams(p: PathRef): DirectoryParams {
  return p.b64 ? { path_b64: p.b64 } : { path: p.text };
}

function toBytes(p: PathRef): Uint8Array {
  if (p.b64) return Uint8Array.from(atob(p.b64), (c) => c.charCodeAt(0));
  return new TextEncoder().encode(p.text);
}

function toB64(bytes: Uint8Array): string {
  let s = "";
  for (const b of bytes) s += String.fromCharCode(b);
  return btoa(s);
}

/** `dir`/`name`, where the name may itself be raw bytes. */
export function join(dir: PathRef, name: string, nameB64?: string): PathRef {
  const text = dir.text === "/" ? `/${name}` : `${dir.text}/${name}`;
  if (!dir.b64 && !nameB64) return { text };
  const a = toBytes(dir);
  const b = nameB64 ? toBytes({ text: "", b64: nameB64 }) : new TextEncoder().encode(name);
  const slash = a.length === 1 && a[0] === 47 ? 0 : 1;
  const out = new Uint8Array(a.length + slash + b.length);
  out.set(a);
  if (slash) out[a.length] = 47;
  out.set(b, a.length + slash);
  return { text, b64: toB64(out) };
}

export function parent(p: PathRef): PathRef {
  const cut = (s: string) => {
    const i = s.lastIndexOf("/");
    return i <= 0 ? "/" : s.slice(0, i);
  };
  if (!p.b64) return { text: cut(p.text) };
  const bytes = toBytes(p);
  let i = bytes.lastIndexOf(47);
  if (i <= 0) i = 1;
  const up = bytes.slice(0, i);
  const text = cut(p.text);
  // The parent may well be valid UTF-8 again.
  try {
    const decoded = new TextDecoder("utf-8", { fatal: true }).decode(up);
    return { text: decoded };
  } catch {
    return { text, b64: toB64(up) };
  }
}

/** Whether `p` is `root` or below it. */
export function within(p: PathRef, root: PathRef): boolean {
  const raw = (x: PathRef) => String.fromCharCode(...toBytes(x));
  const a = raw(p);
  const r = raw(root);
  return a === r || r === "/" || a.startsWith(`${r}/`);
}

/** The directories from `root` down to `p`, for breadcrumbs. */
export function crumbs(p: PathRef, root: PathRef): PathRef[] {
  const out: PathRef[] = [];
  let at: PathRef = p;
  for (let i = 0; i < 4096; i++) {
    out.push(at);
    if (!within(at, root) || same(at, root) || at.text === "/") break;
    at = parent(at);
  }
  return out.reverse();
}

export function same(a: PathRef, b: PathRef): boolean {
  return a.text === b.text && (a.b64 ?? "") === (b.b64 ?? "");
}

export function baseName(p: PathRef): string {
  if (p.text === "/") return "/";
  return p.text.slice(p.text.lastIndexOf("/") + 1);
}
