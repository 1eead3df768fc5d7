import { useEffect, useState } from "preact/hooks";
import { ApiError, getJson, type Params } from "./api";

export interface Loaded<T> {
  data?: T;
  error?: ApiError;
  loading: boolean;
}

/** GETs an API route whenever the route or its parameters change; `null` fetches nothing. */
export function useApi<T>(route: string | null, params: Params = {}): Loaded<T> {
  const key = route === null ? "" : `${route}?${JSON.stringify(params)}`;
  const [state, setState] = useState<Loaded<T>>({ loading: route !== null });
  useEffect(() => {
    if (route === null) {
      setState({ loading: false });
      return;
    }
    const abort = new AbortController();
    setState((s) => ({ data: s.data, loading: true }));
    getJson<T>(route, params, abort.signal).then(
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
