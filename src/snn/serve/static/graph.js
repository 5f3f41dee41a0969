// The state machine, drawn from the layout the server computes from its definition
// (GET /api/machine): boxes for states, containers for Map states, arrows for transitions.
// update(progress) highlights the states running now and writes each state's counts.
import { svg, num } from "./common.js";

function counts(state) {
  if (!state) return "";
  const parts = [`×${state.entered}`];
  if (state.mean_ms !== null && state.mean_ms !== undefined) parts.push(`${num(state.mean_ms, 1)} ms`);
  if (state.running > 1) parts.push(`${state.running} running`);
  return parts.join(" · ");
}

export function drawMachine(target, graph) {
  const root = svg("svg", { class: "machine", width: graph.width, height: graph.height,
    viewBox: `0 0 ${graph.width} ${graph.height}` });
  root.append(svg("defs", {},
    ["arrow", "arrow-catch", "arrow-loop"].map((id) => svg("marker", { id, viewBox: "0 0 10 10", refX: 9, refY: 5,
      markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" },
    svg("path", { d: "M0,0L10,5L0,10z", fill: id === "arrow-catch" ? "#f87171" : id === "arrow-loop" ? "#2563eb" : "#64748b" })))));

  const groups = new Map(); // state name -> [{group, counts text}]
  for (const node of graph.nodes) {
    const group = svg("g", { class: `node ${node.type}${node.container ? " container-node" : ""}`,
      "data-name": node.name, "data-path": node.path, transform: `translate(${node.x},${node.y})` },
    svg("title", {}, `${node.name} (${node.type})${node.comment ? `: ${node.comment}` : ""}`));
    let text;
    if (node.container) {
      group.append(svg("rect", { class: "container", width: node.w, height: node.h, rx: 10 }),
        svg("text", { class: "title", x: 12, y: 17 }, node.name),
        svg("text", { class: "subtitle", x: 12, y: 30 }, node.subtitle));
      text = svg("text", { class: "counts", x: node.w - 10, y: 17, "text-anchor": "end" });
    } else {
      group.append(svg("rect", { class: "state", width: node.w, height: node.h, rx: node.type === "Choice" ? 18 : 6 }),
        svg("text", { class: "name", x: node.w / 2, y: 20, "text-anchor": "middle" }, node.name));
      text = svg("text", { class: "counts", x: node.w / 2, y: 36, "text-anchor": "middle" });
    }
    group.append(text);
    root.append(group);
    if (!groups.has(node.name)) groups.set(node.name, []);
    groups.get(node.name).push({ group, text });
  }

  const edges = svg("g", {});
  for (const edge of graph.edges) {
    const d = edge.points.map(([x, y], i) => `${i ? "L" : "M"}${x},${y}`).join("");
    const marker = edge.kind === "catch" ? "arrow-catch" : edge.kind === "loop" ? "arrow-loop" : "arrow";
    edges.append(svg("path", { class: `edge ${edge.kind}`, d, "marker-end": `url(#${marker})`,
      "data-from": edge.from, "data-to": edge.to }));
    if (edge.kind === "choice" || edge.kind === "default") {
      // Beside the arrow's last leg, just before it reaches its state.
      const p = edge.points, last = p[p.length - 1], before = p[p.length - 2];
      const y = p.length > 2 ? before[1] + 14 : (before[1] + last[1]) / 2 + 4;
      // Rules joined by "or" (several rules to one state) go one per line.
      const lines = edge.label.split(" or ").map((line, i, all) =>
        svg("tspan", { x: last[0] + 6, dy: i ? 12 : 0 }, i < all.length - 1 ? `${line} or` : line));
      edges.append(svg("text", { class: "edge-label", x: last[0] + 6, y }, lines));
    }
  }
  root.append(edges);
  const start = graph.nodes.find((n) => n.path === graph.start);
  if (start) {
    const x = start.x + start.w / 2;
    root.append(svg("circle", { class: "start", cx: x, cy: start.y - 26, r: 6 }),
      svg("path", { class: "edge", d: `M${x},${start.y - 20}L${x},${start.y}`, "marker-end": "url(#arrow)" }));
  }
  target.replaceChildren(root);

  return {
    update(progress) {
      const active = new Set(progress.active || []);
      const states = progress.states || {};
      for (const [name, entries] of groups) {
        for (const { group, text } of entries) {
          group.classList.toggle("active", active.has(name));
          group.classList.toggle("visited", Boolean(states[name]));
          text.textContent = counts(states[name]);
        }
      }
    },
  };
}
