import { defineConfig } from "vite";

// JSX is compiled for Preact by Vite's own transformer; no plugin needed.
export default defineConfig({
  oxc: { jsx: { runtime: "automatic", importSource: "preact" } },
  worker: { format: "es" },
  build: {
    outDir: "dist",
    emptyOutDir: true,
    target: "es2022",
    // No inline scripts: the API serves the UI under a strict Content Security Policy.
    modulePreload: { polyfill: false },
    assetsInlineLimit: 0,
  },
  // `npm run dev` proxies the API of a storage-api on 127.0.0.1:8080.
  server: { host: "127.0.0.1", proxy: { "/api": "http://127.0.0.1:8080" } },
});
