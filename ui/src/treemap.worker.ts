// Lays out treemaps off the main thread, so a slow Voronoi layout never freezes the page.
import { layout, type LayoutRequest } from "./layout";

const scope = self as unknown as {
  onmessage: ((e: MessageEvent<LayoutRequest>) => void) | null;
  postMessage(message: unknown): void;
};

scope.onmessage = (e) => {
  try {
    scope.postMessage(layout(e.data));
  } catch (err) {
    scope.postMessage({ id: e.data.id, error: String(err) });
  }
};
