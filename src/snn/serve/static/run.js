// A run: its cost curve, results, parameters, executions, and what each neuron does.
import { getJSON, el, num, percent, duration, statusBadge, runName, runURL, apiURL, showError } from "./common.js";
import { LineChart, sparkBars } from "./chart.js";

const name = runName();
document.title = `${name} · SNN`;

function kv(rows) {
  return el("table", { class: "kv" }, el("tbody", {}, rows.map(([k, v]) => el("tr", {}, el("td", {}, k), el("td", {}, v)))));
}

function confusion(cm) {
  if (!cm) return el("p", { class: "note" }, "No confusion matrix (the run has not finished).");
  return el("table", { class: "cm", id: "confusion" },
    el("thead", {}, el("tr", {}, el("th", {}), el("th", {}, "predicted cat"), el("th", {}, "predicted non-cat"))),
    el("tbody", {},
      el("tr", {}, el("th", {}, "cat"), el("td", { class: "hit" }, cm.true_positive), el("td", { class: "miss" }, cm.false_negative)),
      el("tr", {}, el("th", {}, "non-cat"), el("td", { class: "miss" }, cm.false_positive), el("td", { class: "hit" }, cm.true_negative))));
}

function stat(label, value, id) {
  return el("div", { class: "stat" }, el("div", { class: "label" }, label), el("div", { class: "big", id }, value));
}

// A parameter's value as text: {"name": "adam", "beta1": 0.9} reads "adam (beta1 0.9)".
function setting(value) {
  if (value === null || typeof value !== "object") return String(value);
  const { name, ...rest } = value;
  const settings = Object.entries(rest).map(([k, v]) => `${k.replaceAll("_", " ")} ${v}`).join(", ");
  if (name === undefined) return settings;
  return settings ? `${name} (${settings})` : String(name);
}

function showRun(run) {
  document.getElementById("title").replaceChildren(run.name, " ", statusBadge(run));
  const links = [];
  if (run.status === "running") links.push(el("a", { href: `${runURL(run.name)}/live` }, "watch it live"));
  if (run.has_model) links.push(el("a", { href: `/predict?run=${encodeURIComponent(run.name)}` }, "classify a picture with it"));
  document.getElementById("subtitle").replaceChildren(
    `${run.engine || "?"} engine · network ${run.network || "?"} (${(run.activations || []).join(", ")}) · `,
    `${run.epoch} of ${run.epochs ?? "?"} epochs`, ...links.flatMap((a) => [" · ", a]));

  const cost = document.getElementById("cost");
  const chart = new LineChart(cost, { yLabel: "cost", legend: true });
  const series = [{ name: "cost", x: run.costs.map((_, i) => i), y: run.costs }];
  if (run.validation_costs) {
    series.push({ name: "validation cost", x: run.validation_costs.map((_, i) => i), y: run.validation_costs });
  }
  chart.setData(series);

  const p = run.parameters || {};
  const layers = Object.keys(p.neurons || {}).map((k) => `${p.neurons[k]} ${(p.activations || {})[k] || ""}`);
  document.getElementById("facts").replaceChildren(
    el("section", { class: "card", id: "results" }, el("h2", {}, "Results"),
      el("div", { class: "row" }, stat("train accuracy", percent(run.train_accuracy), "train-accuracy"),
        stat("test accuracy", percent(run.test_accuracy), "test-accuracy"),
        stat("final cost", num(run.final_cost, 6), "final-cost")),
      el("h3", {}, "Test set: confusion matrix"), confusion(run.confusion_matrix),
      el("p", { class: "note" }, `wall time ${duration(run.wall_seconds)}`,
        run.state_transitions ? ` · ${run.state_transitions} state transitions` : "",
        run.lambda_invocations ? ` · ${run.lambda_invocations} Lambda invocations` : "")),
    el("section", { class: "card", id: "parameters" }, el("h2", {}, "Parameters"),
      kv([["network", layers.join(" → ") || "–"], ...Object.entries(p)
        .filter(([k]) => !["neurons", "activations"].includes(k)).map(([k, v]) => [k.replaceAll("_", " "), setting(v)])])));
  if (run.stopped_early) {
    document.getElementById("results").append(el("p", { class: "note", id: "stopped-early" },
      `${run.stopped_early}; the model is epoch ${run.model_epoch}'s`));
  }

  const executions = document.getElementById("executions");
  executions.append(run.executions.length ? el("div", { class: "scroll" }, el("table", {},
    el("thead", {}, el("tr", {}, ["execution", "status", "history events", "epochs"].map((h) => el("th", {}, h)))),
    el("tbody", {}, run.executions.map((e) => el("tr", {}, el("td", { class: "name" }, e.name), el("td", {}, e.status),
      el("td", { class: "num" }, e.history_events ?? "–"), el("td", {}, `${e.first_epoch ?? "?"} – ${e.last_epoch ?? "?"}`))))))
    : el("p", { class: "note" }, run.engine === "direct" ? "None: the direct engine runs no state machine." : "None recorded."));
}

function layerSection(run, layer, sampled) {
  const more = layer.shown.length < layer.neurons ? ` (the first ${layer.shown.length} shown)` : "";
  const section = el("section", { class: "card layer", id: `layer${layer.number}` },
    el("h2", {}, `Layer ${layer.number}: ${layer.neurons} ${layer.activation} neuron(s) of ${layer.inputs} inputs${more}`));
  if (layer.number === 1) {
    section.append(el("h3", {}, "Weights as pictures (each neuron scaled to its own min … max)"),
      el("div", { class: "pictures" }, layer.shown.map((i) => el("figure", {},
        el("img", { src: apiURL(run.name, `/weights/${i}.png`), alt: `weights of neuron ${i}`, loading: "lazy" }), `neuron ${i}`))));
  }
  const z = layer.histograms.Z, a = layer.histograms.A;
  const head = ["neuron", "|w|", "w mean", "w std", "b", "Z over the training set", "Z mean", "Z std",
    `A = ${layer.activation}(Z)`, "A mean", "A std", "active", ...sampled.map((e) => `|dW| @${e}`)];
  section.append(el("h3", {}, "Per neuron"), el("div", { class: "scroll" }, el("table", { class: "neurons" },
    el("thead", {}, el("tr", {}, head.map((h) => el("th", { class: h.startsWith("Z over") || h.startsWith("A =") ? null : "num" }, h)))),
    el("tbody", {}, layer.rows.map((r, k) => el("tr", {},
      el("td", { class: "num" }, r.neuron), el("td", { class: "num" }, num(r.w_norm)), el("td", { class: "num" }, num(r.w_mean)),
      el("td", { class: "num" }, num(r.w_std)), el("td", { class: "num" }, num(r.b)),
      el("td", { title: `Z from ${num(r.Z[2])} to ${num(r.Z[3])}` }, sparkBars(z.counts[k], "z")),
      el("td", { class: "num" }, num(r.Z[0])), el("td", { class: "num" }, num(r.Z[1])),
      el("td", { title: `A from ${num(r.A[2])} to ${num(r.A[3])}` }, sparkBars(a.counts[k], "a")),
      el("td", { class: "num" }, num(r.A[0])), el("td", { class: "num" }, num(r.A[1])),
      el("td", { class: "num" }, r.active === null ? "–" : percent(r.active)),
      ...(r.dW_norm || sampled.map(() => null)).map((g) => el("td", { class: "num" }, num(g)))))))));
  if (layer.gradients) {
    section.append(el("h3", {}, "Gradient norm |dW| of each neuron during training"));
    const box = el("div", {});
    section.append(box);
    return [section, () => new LineChart(box, { yLabel: "|dW|", log: true, height: 240 }).setData(
      layer.shown.map((i, k) => ({ name: `neuron ${i}`, x: run.epochs, y: layer.gradients.dW_norm[k] })))];
  }
  return [section, () => {}];
}

async function main() {
  try {
    showRun(await getJSON(apiURL(name)));
  } catch (error) {
    showError(document.querySelector("main"), error);
    return;
  }
  const neurons = document.getElementById("neurons");
  try {
    const inspection = await getJSON(apiURL(name, "/inspection"));
    const intro = el("div", { class: "card" }, el("h2", {}, "Neurons"), el("p", { class: "note" },
      `Z and A of each neuron over the ${inspection.examples} training pictures (one forward pass of the model), `,
      "gradient norms at the epochs the run recorded.",
      inspection.history_note ? ` No gradient history: ${inspection.history_note}.` : ""));
    const drawn = inspection.layers.map((layer) => layerSection({ name, epochs: inspection.epochs }, layer, inspection.sampled));
    neurons.replaceChildren(intro, ...drawn.map(([section]) => section));
    drawn.forEach(([, draw]) => draw());
  } catch (error) {
    neurons.replaceChildren(el("div", { class: "card" }, el("h2", {}, "Neurons"), el("p", { class: "error" }, error.message)));
  }
}

main();
