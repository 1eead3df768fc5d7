import { useEffect, useState } from "preact/hooks";
import { ApiError, type Call } from "./api";

export interface Loaded<T> {
  data?: T;
  error?: ApiError;
  loading: boolean;
}

/**
 * Runs a call of the API (one of `api`'s functions) whenever its URL, or `refresh`, changes;
 * `null` fetches nothing.
 */
export function useApi<T>(call: Call<T> | null, refresh?: number): Loaded<T> {
  const key = call === null ? "" : `${call.url}#${refresh ?? ""}`;
  const [state, setState] = useState<Loaded<T>>({ loading: call !== null });
  useEffect(() => {
    if (call === null) {
      setState({ loading: false });
      return;
    }
    const abort = new AbortController();
    setState((s) => ({ data: s.data, loading: true }));
    call.get(abort.signal).then(
      (data) => setState({ data, loading: false }),
      (e: unknown) => {
        if (abort.signal.aborted) return;
        const error = e instanceof ApiError ? e : new ApiError(0, String(e));
        if (error.status === 401) window.dispatchEvent(new CustomEvent("storage-tracker:unauthorized"));
        setState({ error, loading: false });
      },
    );
    return () => abort.abort();
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [key]);
  return state;
}
