// The runs page: every run folder, newest first, refreshed every few seconds.
import { getJSON, el, num, percent, ago, statusBadge, runURL, showError } from "./common.js";

const target = document.getElementById("runs");

function row(run) {
  const links = [el("a", { href: runURL(run.name), class: "run-link" }, run.name)];
  if (run.status === "running") links.push(" ", el("a", { href: `${runURL(run.name)}/live` }, "live ▸"));
  const epochs = run.epochs ? `${run.epoch} / ${run.epochs}` : String(run.epoch);
  return el("tr", { dataset: { name: run.name, status: run.status } },
    el("td", {}, links),
    el("td", {}, statusBadge(run)),
    el("td", {}, run.engine || "–"),
    el("td", { title: (run.activations || []).join(", ") }, run.network || "–"),
    el("td", { class: "num" }, epochs),
    el("td", { class: "num" }, num(run.final_cost, 6)),
    el("td", { class: "num" }, percent(run.train_accuracy)),
    el("td", { class: "num" }, percent(run.test_accuracy)),
    el("td", { title: run.changed }, ago(run.changed)));
}

async function refresh() {
  try {
    const { runs } = await getJSON("/api/runs");
    if (!runs.length) {
      target.replaceChildren(el("p", {}, "No runs yet. Train one with ", el("code", {}, "snn train"),
        "; it appears here as it starts."));
      return;
    }
    const head = ["run", "status", "engine", "network", "epochs", "final cost", "train acc.", "test acc.", "changed"];
    target.replaceChildren(el("table", { id: "runs-table" },
      el("thead", {}, el("tr", {}, head.map((h, i) => el("th", { class: i >= 4 && i <= 7 ? "num" : null }, h)))),
      el("tbody", {}, runs.map(row))));
  } catch (error) {
    showError(target, error);
  }
}

refresh();
setInterval(refresh, 4000);
