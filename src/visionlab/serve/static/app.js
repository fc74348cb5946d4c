// The page's only logic: send the picked or dropped image to POST /predict (with
// preview=true, so the answer carries the image as the model sees it), then draw the
// top-5 classes as bars. Plain JS, no build step.
"use strict";

const $ = (id) => document.getElementById(id);

function showStatus(text, isError = false) {
  $("status").textContent = text;
  $("status").className = isError ? "error" : "";
}

function drawAnswer(answer) {
  $("input").src = "data:image/png;base64," + answer.input_png;
  const overlay = $("overlay"); // Grad-CAM hook: drawn when the server sends overlay_png
  overlay.hidden = !answer.overlay_png;
  if (answer.overlay_png) overlay.src = "data:image/png;base64," + answer.overlay_png;
  const bars = $("bars");
  bars.replaceChildren(...answer.top_k.map(({ class: name, probability }) => {
    const item = document.createElement("li");
    item.className = "prediction";
    const label = document.createElement("div");
    label.className = "label";
    const nameSpan = document.createElement("span");
    nameSpan.className = "class-name";
    nameSpan.textContent = name;
    const value = document.createElement("span");
    value.textContent = (100 * probability).toFixed(1) + " %";
    label.append(nameSpan, value);
    const bar = document.createElement("div");
    bar.className = "bar";
    bar.style.width = (100 * probability).toFixed(1) + "%";
    item.append(label, bar);
    return item;
  }));
  $("result").hidden = false;
  showStatus(`${answer.top_k[0].class} (${answer.model}, ${answer.backend})`);
}

async function classify(file) {
  if (!file) return;
  showStatus(`classifying ${file.name}...`);
  const form = new FormData();
  form.append("image", file);
  form.append("preview", "true");
  try {
    const response = await fetch("/predict", { method: "POST", body: form });
    const answer = await response.json();
    if (!response.ok) throw new Error(answer.detail || response.statusText);
    drawAnswer(answer);
  } catch (err) {
    $("result").hidden = true;
    showStatus(`${file.name}: ${err.message}`, true);
  }
}

async function showModel() {
  try {
    const info = (await (await fetch("/info")).json()).model;
    $("model").textContent = `${info.name} (${info.backend}): ${info.classes.length} classes, ` +
      `input ${info.input_shape.join("x")}`;
  } catch (err) {
    $("model").textContent = "model info unavailable";
  }
}

const drop = $("drop");
$("file").addEventListener("change", (event) => classify(event.target.files[0]));
drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (event) => {
  event.preventDefault();
  drop.classList.remove("over");
  classify(event.dataTransfer.files[0]);
});
showModel();
