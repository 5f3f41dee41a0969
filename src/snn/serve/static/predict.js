// Classify a picture with a run's model: the server runs `snn predict`'s own code on it.
import { getJSON, el, num, apiURL, runURL, showError } from "./common.js";

const select = document.getElementById("run");
const drop = document.getElementById("drop");
const input = document.getElementById("file");
const result = document.getElementById("result");
let preview = null;

async function loadRuns() {
  const { runs, best } = await getJSON("/api/runs");
  const usable = runs.filter((r) => r.has_model);
  // ?run=NAME, else the finished run whose model has the best test accuracy
  const asked = new URLSearchParams(location.search).get("run");
  const wanted = usable.some((r) => r.name === asked) ? asked : best;
  select.replaceChildren(...usable.map((r) => el("option", { value: r.name, selected: r.name === wanted },
    `${r.name} (${r.network}, test accuracy ${r.test_accuracy === null ? "–" : (100 * r.test_accuracy).toFixed(0) + " %"})`)));
  if (!usable.length) {
    select.append(el("option", { value: "" }, "no run has a model yet"));
    select.disabled = true;
  }
}

async function classify(file) {
  if (!file || !select.value) return;
  result.hidden = false;
  result.replaceChildren(el("p", { class: "note" }, `Classifying ${file.name}…`));
  if (preview) URL.revokeObjectURL(preview);
  preview = URL.createObjectURL(file);
  try {
    const response = await fetch(apiURL(select.value, "/predict"), { method: "POST", body: file,
      headers: { "Content-Type": file.type || "application/octet-stream" } });
    const answer = await response.json();
    if (!response.ok) throw new Error(answer.error || response.statusText);
    result.replaceChildren(
      el("h2", {}, "The network says"),
      el("div", { class: "row" },
        el("div", { class: "stat" }, el("div", { class: "label" }, "label"),
          el("div", { class: `big label-${answer.label}`, id: "label" }, answer.label)),
        el("div", { class: "stat" }, el("div", { class: "label" }, "P(cat)"),
          el("div", { class: "big", id: "probability", dataset: { probability: String(answer.probability) } },
            answer.probability.toFixed(4)))),
      el("div", { class: "row" },
        el("figure", {}, el("img", { class: "preview", src: preview, alt: "the picture" }),
          el("figcaption", { class: "note" }, file.name)),
        el("figure", {}, el("img", { class: "seen", id: "seen", src: answer.input, alt: "the input the network saw" }),
          el("figcaption", { class: "note" }, `what the network saw: ${answer.input_size} × ${answer.input_size} pixels`))),
      el("p", { class: "note" }, `Model of run `, el("a", { href: runURL(answer.run) }, answer.run),
        `: cat when P(cat) > 0.5. P(cat) = ${num(answer.probability, 12)}.`));
  } catch (error) {
    showError(result, error);
  }
}

input.addEventListener("change", () => classify(input.files[0]));
select.addEventListener("change", () => classify(input.files[0]));
drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (event) => {
  event.preventDefault();
  drop.classList.remove("over");
  if (event.dataTransfer.files.length) classify(event.dataTransfer.files[0]);
});

loadRuns().catch((error) => showError(result, error)).finally(() => { result.hidden = result.childElementCount === 0; });
