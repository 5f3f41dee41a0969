// A run as it goes: the state machine with the states running now, counts and mean durations
// per state, and the cost curve growing, from the server's event stream.
import { getJSON, el, num, statusBadge, runName, runURL, apiURL, showError } from "./common.js";
import { LineChart } from "./chart.js";
import { drawMachine } from "./graph.js";

const name = runName();
document.title = `${name} · live · SNN`;
const chart = new LineChart(document.getElementById("cost"), { yLabel: "cost" });
chart.setData([{ name: "cost", x: [], y: [] }]);
let machine = null;

function showStates(progress) {
  const active = new Set(progress.active || []);
  const entries = Object.entries(progress.states || {});
  const box = document.getElementById("states");
  box.replaceChildren(el("h2", {}, "States"), entries.length ? el("div", { class: "scroll" }, el("table", { class: "states-table" },
    el("thead", {}, el("tr", {}, ["state", "entered", "running", "mean"].map((h, i) => el("th", { class: i ? "num" : null }, h)))),
    el("tbody", {}, entries.map(([state, s]) => el("tr", { dataset: { state } },
      el("td", { class: active.has(state) ? "active-row" : null }, state),
      el("td", { class: "num" }, s.entered), el("td", { class: "num" }, s.running),
      el("td", { class: "num" }, s.mean_ms === null ? "–" : `${num(s.mean_ms, 1)} ms`))))))
    : el("p", { class: "note" }, "No state counts: only the local engine publishes them."));
}

function showExecutions(progress) {
  const rows = [...(progress.executions || [])];
  if (progress.execution) rows.push({ ...progress.execution, first_epoch: null, last_epoch: null, now: true });
  document.getElementById("executions").replaceChildren(el("h2", {}, "Executions"), rows.length
    ? el("div", { class: "scroll" }, el("table", {}, el("thead", {}, el("tr", {}, ["execution", "status", "history events"].map((h, i) => el("th", { class: i === 2 ? "num" : null }, h)))),
      el("tbody", {}, rows.map((e) => el("tr", {}, el("td", { class: "name" }, e.name), el("td", {}, e.status), el("td", { class: "num" }, e.history_events ?? "–"))))))
    : el("p", { class: "note" }, "None yet."));
}

function show(progress) {
  document.getElementById("title").replaceChildren(progress.name, " ", statusBadge(progress));
  const epochs = progress.epochs ? `${progress.epoch} of ${progress.epochs}` : `${progress.epoch}`;
  const cost = progress.final_cost === null || progress.final_cost === undefined ? "" : ` · cost ${num(progress.final_cost, 6)}`;
  const now = progress.active && progress.active.length ? ` · now in ${progress.active.join(" › ")}` : "";
  document.getElementById("subtitle").replaceChildren(
    el("span", { id: "epoch", dataset: { epoch: progress.epoch } }, `epoch ${epochs}`), cost, now,
    progress.status === "running" ? "" : el("span", {}, " · ", el("a", { href: runURL(progress.name) }, "the run's page")),
    progress.error ? el("p", { class: "error" }, progress.error) : "");
  if (progress.epochs && !chart.options.xRange) chart.options.xRange = [0, progress.epochs - 1];
  // the costs of every costs_step-th epoch from costs_from on (a long run's curve is thinned)
  const step = progress.costs_step || 1;
  const xs = chart.series[0].x;
  const next = xs.length ? xs[xs.length - 1] + step : 0;
  if (progress.costs_from < next) chart.setData([{ name: "cost", x: [], y: [] }]);
  chart.append(0, progress.costs.map((_, i) => progress.costs_from + i * step), progress.costs);
  if (machine) machine.update(progress);
  showStates(progress);
  showExecutions(progress);
}

async function main() {
  try {
    machine = drawMachine(document.getElementById("machine"), await getJSON("/api/machine"));
  } catch (error) {
    showError(document.getElementById("machine"), error);
  }
  const stream = new EventSource(apiURL(name, "/events"));
  stream.addEventListener("progress", (event) => show(JSON.parse(event.data)));
  stream.addEventListener("end", () => {
    stream.close();
    document.body.dataset.ended = "true";
  });
  stream.onerror = () => {
    if (stream.readyState === EventSource.CLOSED) showError(document.getElementById("subtitle"), new Error("the server closed the stream"));
  };
}

main();
