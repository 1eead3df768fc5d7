// How numbers, sizes and times are shown. Sizes are binary (KiB = 1024 B), as du -h shows them.

const UNITS = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];

export function bytes(n: number): string {
  if (!Number.isFinite(n)) return "";
  const sign = n < 0 ? "-" : "";
  let v = Math.abs(n);
  let i = 0;
  while (v >= 1024 && i < UNITS.length - 1) {
    v /= 1024;
    i++;
  }
  return `${sign}${i === 0 ? v.toFixed(0) : v < 10 ? v.toFixed(2) : v < 100 ? v.toFixed(1) : v.toFixed(0)} ${UNITS[i]}`;
}

/** A change in bytes, always signed. */
export function deltaBytes(n: number): string {
  return n > 0 ? `+${bytes(n)}` : n === 0 ? "0 B" : bytes(n);
}

export function count(n: number): string {
  return n.toLocaleString("en-US");
}

/** A count and its noun, singular for one: "1 directory", "2 directories". */
export function counted(n: number, one: string, many: string): string {
  return `${count(n)} ${n === 1 ? one : many}`;
}

export function deltaCount(n: number): string {
  return n > 0 ? `+${count(n)}` : n === 0 ? "0" : count(n);
}

const NS_PER_MS = 1_000_000;

/** A time in nanoseconds since the epoch, as UTC. */
export function dateNs(ns: number): string {
  return dateMs(ns / NS_PER_MS);
}

export function dateSeconds(s: number): string {
  return dateMs(s * 1000);
}

function dateMs(ms: number): string {
  const d = new Date(ms);
  if (Number.isNaN(d.getTime())) return "";
  return `${d.toISOString().slice(0, 16).replace("T", " ")} UTC`;
}

export function day(s: number): string {
  return new Date(s * 1000).toISOString().slice(0, 10);
}

/** How long before `nowSeconds` (the scan) a time was: "3 d", "2.5 y"; "future" if after. */
export function age(ns: number, nowSeconds: number): string {
  const days = (nowSeconds - ns / 1e9) / 86400;
  if (days < -1 / 24) return "future";
  if (days < 1) return `${Math.max(0, Math.round(days * 24))} h`;
  if (days < 365) return `${Math.floor(days)} d`;
  return `${(days / 365.25).toFixed(1)} y`;
}

export function percent(part: number, whole: number): string {
  if (whole <= 0) return "";
  const p = (100 * part) / whole;
  return p >= 10 || p === 0 ? `${p.toFixed(0)}%` : `${p.toFixed(1)}%`;
}
