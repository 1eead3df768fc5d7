declare module "d3-voronoi-treemap" {
  import type { HierarchyNode } from "d3-hierarchy";
  export interface VoronoiTreemap {
    (root: HierarchyNode<unknown>): void;
    clip(polygon: [number, number][]): VoronoiTreemap;
    prng(random: () => number): VoronoiTreemap;
    minWeightRatio(ratio: number): VoronoiTreemap;
    convergenceRatio(ratio: number): VoronoiTreemap;
    maxIterationCount(count: number): VoronoiTreemap;
  }
  export function voronoiTreemap(): VoronoiTreemap;
}
