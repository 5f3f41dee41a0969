// A line chart in SVG: axes, one polyline per series, the values under the pointer on hover,
// drag across to zoom into epochs, double-click (or "show all") to zoom out. No library.
import { el, svg, num } from "./common.js";

const MARGIN = { left: 62, right: 14, top: 12, bottom: 36 };
const COLORS = ["#2563eb", "#ea580c", "#16a34a", "#9333ea", "#db2777", "#0891b2", "#ca8a04",
  "#4b5563", "#dc2626", "#65a30d"];

// Round steps for about `count` ticks between lo and hi.
function ticks(lo, hi, count = 6) {
  if (!(hi > lo)) return [lo];
  const raw = (hi - lo) / count, power = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * power).find((s) => s >= raw) || raw;
  const out = [];
  for (let t = Math.ceil(lo / step) * step; t <= hi + step * 1e-9; t += step) out.push(+t.toPrecision(12));
  return out;
}

export class LineChart {
  // options: xLabel, yLabel, height, log (y on a log scale when every value is > 0),
  // integerX (x values are epochs), name (for the tooltip when there is one series), legend
  // (the series' names in a corner, when there are several)
  constructor(target, options = {}) {
    this.options = { height: 280, xLabel: "epoch", yLabel: "", log: false, ...options };
    this.series = [];
    this.zoom = null; // [x0, x1] or null for everything
    this.box = el("div", { class: "chart-box" });
    this.tooltip = el("div", { class: "tooltip" });
    this.reset = el("button", { type: "button", hidden: true }, "show all");
    this.reset.addEventListener("click", () => this.setZoom(null));
    this.info = el("span", {}, "drag across the chart to zoom");
    this.box.append(this.tooltip);
    target.append(this.box, el("div", { class: "chart-tools" }, this.info, this.reset));
    this.width = 0;
    new ResizeObserver(() => {
      if (this.box.clientWidth !== this.width) this.render();
    }).observe(this.box);
  }

  // series: [{name, x: [...], y: [...]}]
  setData(series) {
    this.series = series.map((s, i) => ({ color: COLORS[i % COLORS.length], ...s }));
    this.render();
  }

  append(index, xs, ys) {
    const s = this.series[index];
    s.x.push(...xs);
    s.y.push(...ys);
    this.render();
  }

  setZoom(range) {
    this.zoom = range;
    this.reset.hidden = range === null;
    this.render();
  }

  domain() {
    const xs = this.series.flatMap((s) => (s.x.length ? [s.x[0], s.x[s.x.length - 1]] : []));
    if (this.options.xRange) xs.push(...this.options.xRange);
    let [x0, x1] = this.zoom || [Math.min(...xs), Math.max(...xs)];
    if (!(x1 > x0)) [x0, x1] = [x0 - 1, x0 + 1];
    const visible = this.series.flatMap((s) => s.y.filter((y, i) => y !== null && s.x[i] >= x0 && s.x[i] <= x1));
    const log = this.options.log && visible.length > 0 && visible.every((y) => y > 0);
    const f = log ? Math.log10 : (v) => v;
    let y0 = Math.min(...visible.map(f)), y1 = Math.max(...visible.map(f));
    if (!visible.length) [y0, y1] = [0, 1];
    if (!(y1 > y0)) [y0, y1] = [y0 - 0.5, y1 + 0.5];
    const pad = (y1 - y0) * 0.05;
    return { x0, x1, y0: y0 - pad, y1: y1 + pad, log };
  }

  render() {
    const width = this.box.clientWidth || 600, height = this.options.height;
    this.width = this.box.clientWidth;
    const old = this.box.querySelector("svg");
    if (old) old.remove();
    if (!this.series.some((s) => s.x.length)) {
      this.box.prepend(svg("svg", { class: "chart", width, height, "data-points": 0 },
        svg("text", { x: width / 2, y: height / 2, "text-anchor": "middle" }, "no values yet")));
      return;
    }
    const d = this.domain();
    const w = width - MARGIN.left - MARGIN.right, h = height - MARGIN.top - MARGIN.bottom;
    const X = (x) => MARGIN.left + ((x - d.x0) / (d.x1 - d.x0)) * w;
    const fy = d.log ? Math.log10 : (v) => v;
    const Y = (y) => MARGIN.top + (1 - (fy(y) - d.y0) / (d.y1 - d.y0)) * h;
    const root = svg("svg", { class: "chart", width, height,
      "data-points": this.series.map((s) => s.x.length).join(",") });
    const clip = `clip${Math.random().toString(36).slice(2)}`;
    root.append(svg("clipPath", { id: clip }, svg("rect", { x: MARGIN.left, y: MARGIN.top, width: w, height: h })));

    const axes = svg("g", { class: "axis" });
    for (const t of ticks(d.x0, d.x1, Math.max(2, Math.floor(w / 90)))) {
      if (this.options.integerX !== false && !Number.isInteger(t)) continue;
      axes.append(svg("line", { class: "grid-line", x1: X(t), x2: X(t), y1: MARGIN.top, y2: MARGIN.top + h }),
        svg("text", { x: X(t), y: MARGIN.top + h + 16, "text-anchor": "middle" }, num(t, 2)));
    }
    let yTicks = ticks(d.y0, d.y1, Math.max(2, Math.floor(h / 45)));
    if (d.log) {  // powers of ten, or round values when the range is within a decade or two
      const powers = ticks(d.y0, d.y1, 5).filter(Number.isInteger).map((p) => 10 ** p);
      yTicks = powers.length >= 2 ? powers : ticks(10 ** d.y0, 10 ** d.y1, 4).filter((t) => t > 0);
    }
    for (const t of yTicks) {
      axes.append(svg("line", { class: "grid-line", x1: MARGIN.left, x2: MARGIN.left + w, y1: Y(t), y2: Y(t) }),
        svg("text", { x: MARGIN.left - 6, y: Y(t) + 4, "text-anchor": "end" }, num(t, 4)));
    }
    axes.append(svg("path", { d: `M${MARGIN.left},${MARGIN.top}V${MARGIN.top + h}H${MARGIN.left + w}`, fill: "none" }),
      svg("text", { x: MARGIN.left + w / 2, y: height - 4, "text-anchor": "middle" }, this.options.xLabel),
      svg("text", { x: 12, y: MARGIN.top + h / 2, transform: `rotate(-90 12 ${MARGIN.top + h / 2})`,
        "text-anchor": "middle" }, this.options.yLabel + (d.log ? " (log)" : "")));
    root.append(axes);
    if (this.options.legend && this.series.length > 1) {
      const legend = svg("g", { class: "legend" });
      this.series.forEach((s, k) => {
        const x = MARGIN.left + w - 140, y = MARGIN.top + 12 + k * 16;
        legend.append(svg("line", { x1: x, x2: x + 18, y1: y - 4, y2: y - 4, stroke: s.color, "stroke-width": 2 }),
          svg("text", { x: x + 24, y }, s.name));
      });
      root.append(legend);
    }

    const lines = svg("g", { "clip-path": `url(#${clip})` });
    for (const s of this.series) {
      // Every point in view is drawn; with more points than pixels, one in every few.
      const inView = [];
      for (let i = 0; i < s.x.length; i++) {
        if (s.y[i] !== null && s.x[i] >= d.x0 - 1 && s.x[i] <= d.x1 + 1) inView.push(i);
      }
      const every = Math.max(1, Math.floor(inView.length / (2 * w)));
      const points = inView.filter((_, k) => k % every === 0 || k === inView.length - 1)
        .map((i) => `${X(s.x[i]).toFixed(1)},${Y(s.y[i]).toFixed(1)}`);
      lines.append(svg("polyline", { class: "series", stroke: s.color, points: points.join(" "),
        "data-name": s.name || "" }));
      if (inView.length === 1) {
        lines.append(svg("circle", { r: 3, fill: s.color, cx: X(s.x[inView[0]]), cy: Y(s.y[inView[0]]) }));
      }
    }
    root.append(lines);

    const cursor = svg("line", { class: "cursor", y1: MARGIN.top, y2: MARGIN.top + h, visibility: "hidden" });
    const dots = this.series.map((s) => svg("circle", { r: 3.5, fill: s.color, visibility: "hidden" }));
    const brush = svg("rect", { class: "brush", y: MARGIN.top, height: h, visibility: "hidden" });
    const overlay = svg("rect", { class: "overlay", x: MARGIN.left, y: MARGIN.top, width: w, height: h });
    root.append(cursor, ...dots, brush, overlay);
    this.box.prepend(root);

    const xAt = (event) => d.x0 + ((event.offsetX - MARGIN.left) / w) * (d.x1 - d.x0);
    let dragFrom = null;
    overlay.addEventListener("mousemove", (event) => {
      const x = xAt(event);
      if (dragFrom !== null) {
        const a = Math.min(X(dragFrom), event.offsetX), b = Math.max(X(dragFrom), event.offsetX);
        brush.setAttribute("x", a);
        brush.setAttribute("width", b - a);
        brush.setAttribute("visibility", "visible");
      }
      const lines = [];
      this.series.forEach((s, k) => {
        const i = nearest(s.x, x);
        if (i < 0 || s.y[i] === null) return dots[k].setAttribute("visibility", "hidden");
        dots[k].setAttribute("cx", X(s.x[i]));
        dots[k].setAttribute("cy", Y(s.y[i]));
        dots[k].setAttribute("visibility", "visible");
        if (k === 0) {
          cursor.setAttribute("x1", X(s.x[i]));
          cursor.setAttribute("x2", X(s.x[i]));
          lines.push(`${this.options.xLabel} ${s.x[i]}`);
        }
        if (this.series.length <= 8) lines.push(`${s.name || this.options.yLabel}: ${num(s.y[i], 6)}`);
      });
      cursor.setAttribute("visibility", "visible");
      this.tooltip.replaceChildren(...lines.flatMap((line, k) => (k ? [el("br"), line] : [line])));
      this.tooltip.style.display = "block";
      const left = Math.min(event.offsetX + 14, width - this.tooltip.offsetWidth - 4);
      this.tooltip.style.left = `${left}px`;
      this.tooltip.style.top = `${Math.max(0, event.offsetY - 10 - this.tooltip.offsetHeight)}px`;
    });
    overlay.addEventListener("mouseleave", () => {
      this.tooltip.style.display = "none";
      cursor.setAttribute("visibility", "hidden");
      dots.forEach((dot) => dot.setAttribute("visibility", "hidden"));
    });
    overlay.addEventListener("mousedown", (event) => { dragFrom = xAt(event); event.preventDefault(); });
    overlay.addEventListener("mouseup", (event) => {
      if (dragFrom === null) return;
      const a = Math.min(dragFrom, xAt(event)), b = Math.max(dragFrom, xAt(event));
      dragFrom = null;
      brush.setAttribute("visibility", "hidden");
      if ((X(b) - X(a)) > 6) this.setZoom([a, b]);
    });
    overlay.addEventListener("dblclick", () => this.setZoom(null));
  }
}

// The index of the value of the sorted xs nearest to x (-1 for none).
function nearest(xs, x) {
  if (!xs.length) return -1;
  let lo = 0, hi = xs.length - 1;
  while (hi - lo > 1) {
    const mid = (lo + hi) >> 1;
    if (xs[mid] < x) lo = mid; else hi = mid;
  }
  return Math.abs(xs[lo] - x) <= Math.abs(xs[hi] - x) ? lo : hi;
}

// A small bar chart (a histogram's counts) for a table cell.
export function sparkBars(counts, kind, width = 110, height = 26) {
  const top = Math.max(1, ...counts), step = width / counts.length;
  return svg("svg", { class: "spark", width, height },
    counts.map((c, i) => svg("rect", { class: kind, x: (i * step).toFixed(2), width: Math.max(1, step - 0.4).toFixed(2),
      y: (height - (c / top) * height).toFixed(2), height: ((c / top) * height).toFixed(2) })));
}
