"""The page's HTML, CSS and JavaScript, as Jinja templates in Python strings.

Strings rather than template files so that a plain ``pip install .`` carries
them with the code (no package-data settings), and everything is inline: the
page loads no script, font or style from the network, so it works offline.
"""

from __future__ import annotations

CSS = """
:root { --ink: #1d2430; --muted: #5d6778; --line: #d8dde6; --accent: #2456a6; --bad: #b3261e; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--ink); }
header { background: #17263f; color: #fff; padding: 10px 24px; display: flex; gap: 24px; align-items: baseline; }
header a { color: #cfe0ff; text-decoration: none; margin-right: 16px; }
header a.here { color: #fff; font-weight: 600; border-bottom: 2px solid #fff; }
header .where { color: #9fb3d1; font-size: 12px; margin-left: auto; overflow-wrap: anywhere; }
main { padding: 8px 20px 40px; max-width: 1400px; }
h1 { font-size: 22px; margin: 14px 0 4px; }
h2 { font-size: 18px; margin: 28px 0 8px; border-bottom: 1px solid var(--line); }
h3 { font-size: 15px; margin: 18px 0 6px; }
.muted, .meta { color: var(--muted); } .meta { font-size: 13px; }
code { background: #f1f3f7; padding: 0 3px; border-radius: 3px; font-size: 12.5px; overflow-wrap: anywhere; }
.banner { margin: 10px 24px; padding: 10px 14px; border-left: 5px solid #c9a227; background: #fff8e0; }
.banner.loud { border: 3px solid var(--bad); background: #fde8e6; color: #7a0d07; font-size: 17px; font-weight: 600; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; font-size: 12px; }
th, td { border-bottom: 1px solid var(--line); padding: 3px 5px; text-align: left; vertical-align: top; }
table.board th { background: #f4f6fa; white-space: nowrap; }
table.board thead tr:last-child th { cursor: pointer; user-select: none; }
table.board th[data-order="desc"]::after { content: " ▼"; } table.board th[data-order="asc"]::after { content: " ▲"; }
table.board tr.group th { text-align: center; font-weight: 600; color: var(--muted); cursor: default; }
td.num { text-align: right; white-space: nowrap; font-variant-numeric: tabular-nums; }
td.num .ci { display: block; color: var(--muted); font-size: 11px; }
td.val { background: #f8f9fc; }
td .settings { display: block; color: var(--muted); font-size: 11px; min-width: 140px; max-width: 180px; }
table.plain td:not(:first-child) { text-align: right; }
.plots { display: grid; grid-template-columns: repeat(auto-fill, minmax(420px, 1fr)); gap: 14px; }
figure { margin: 0; } figure img { max-width: 100%; border: 1px solid var(--line); }
figcaption { color: var(--muted); font-size: 12px; }
.missing { color: var(--bad); border: 1px dashed var(--bad); padding: 12px; }
.drop { border: 2px dashed #8aa0c4; border-radius: 8px; padding: 26px; text-align: center; background: #f6f8fc; }
.drop.over { background: #e3ecfb; border-color: var(--accent); }
form .controls { display: flex; gap: 18px; align-items: center; margin: 12px 0; flex-wrap: wrap; }
button { background: var(--accent); color: #fff; border: 0; border-radius: 5px; padding: 7px 18px; font-size: 14px; }
button:disabled { background: #8a97ad; }
.error { color: var(--bad); font-weight: 600; }
.image-result { border: 1px solid var(--line); border-radius: 8px; padding: 10px 14px; margin: 14px 0; }
.image-result .pair { display: flex; gap: 14px; flex-wrap: wrap; align-items: flex-start; }
.image-result img.original { max-height: 300px; max-width: 300px; }
.image-result img.heatmap { max-width: 640px; width: 100%; }
table.probabilities td.p { text-align: right; font-variant-numeric: tabular-nums; }
table.probabilities tr.top { font-weight: 700; }
.bar { background: var(--accent); height: 10px; min-width: 1px; } .bars { width: 180px; }
.mark { font-size: 11px; padding: 0 4px; border-radius: 3px; background: #e3ecfb; color: var(--accent); }
.mark.worse { background: #f1f3f7; color: var(--muted); }
.decision.flagged { color: var(--bad); font-weight: 700; }
"""

BASE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{% block title %}{% endblock %} · cxr-bench</title>
<style>{{ css|safe }}</style>
</head>
<body>
<header>
  <strong>cxr-bench</strong>
  <nav>
    <a href="{{ url_for('run_page') }}" class="{{ 'here' if page == 'run' }}">The run</a>
    <a href="{{ url_for('predict_page') }}" class="{{ 'here' if page == 'predict' }}">One image's answer</a>
  </nav>
  <span class="where">{{ view.results_dir }}</span>
</header>
{% for banner in view.banners %}
<div class="banner{{ ' loud' if '<strong>' in banner }}" role="alert">{{ banner }}</div>
{% endfor %}
<main>{% block main %}{% endblock %}</main>
<script>{% block script %}{% endblock %}</script>
</body>
</html>
"""

RUN = """{% extends "base.html" %}
{% from "listing.html" import listing %}
{% block title %}Run {{ view.results_dir.name }}{% endblock %}
{% block main %}
{% set run = view.run %}{% set config = view.config %}
<h1>Run <code>{{ view.results_dir }}</code></h1>
<p class="meta">Generated {{ run.timestamp }} by cxr-bench <code>{{ run.git }}</code> on {{ run.machine }}.<br>
Command: <code>{{ run.command }}</code></p>

<section id="leaderboard">
<h2>Leaderboard: the selected heads, per task</h2>
<p>One row per selected head and seed (its settings under its name). Test metrics with their 95% bootstrap
interval ({{ config.bootstrap }} resamples of the test images), the same head on the <strong>validation</strong>
split beside them, the operating point (the threshold chosen on validation for sensitivity
{{ config.target_sensitivity }}, applied to test) and the calibration error (ECE) of the positive-class
probability. Sens: sensitivity, spec: specificity, acc: accuracy, prec: precision. Sorted by test
{{ config.sort_metric }}, as in <code>leaderboard.md</code>; <strong>click any column header to sort by it</strong>.</p>
{% for task, positive in view.tasks.items() %}
<h3>{{ task }} <span class="muted">(positive: {{ positive.replace('+', ' + ') }})</span></h3>
<div class="scroll">
<table class="board sortable" data-task="{{ task }}">
<thead>
<tr class="group"><th></th><th colspan="{{ METRICS|length }}">test (95% interval)</th>
<th colspan="{{ VAL_METRICS|length }}">validation</th><th colspan="{{ OPERATING|length - 1 }}">operating point</th>
<th title="calibration">cal.</th></tr>
<tr><th data-type="text">backbone</th>
{% for metric in METRICS %}<th data-column="{{ metric }}" title="test {{ metric }}">{{ SHORT[metric] }}</th>{% endfor %}
{% for metric in VAL_METRICS %}
<th data-column="val_{{ metric }}" title="validation {{ metric }}">{{ SHORT[metric] }}</th>{% endfor %}
{% for column, header in OPERATING.items() %}<th data-column="{{ column }}" title="{{ column }}">{{ header }}</th>
{% endfor %}</tr>
</thead>
<tbody>
{% for row in task_rows(view, task) %}
<tr data-head-id="{{ row.head_id }}">
<td data-value="{{ row.backbone }}"><strong>{{ row.backbone }}</strong>
{%- set mark = verdict_mark(view, task, row.backbone) %}{% if mark %}
<span class="mark {{ mark.split()[0] }}" title="DeLong, Holm-corrected, on the test images">{{ mark }}</span>{% endif %}
<span class="settings">{{ settings_text(row) }}</span></td>
{% for metric in METRICS %}{% set ci = interval(row, metric) %}
<td class="num" data-column="{{ metric }}" data-value="{{ sort_value(row.get(metric)) }}"><span class="v">{{
  number(row.get(metric)) }}</span>{% if ci %}<span class="ci">{{ ci }}</span>{% endif %}</td>{% endfor %}
{% for metric in VAL_METRICS %}{% set column = 'val_' ~ metric %}
<td class="num val" data-column="{{ column }}" data-value="{{ sort_value(row.get(column)) }}"><span class="v">{{
  number(row.get(column)) }}</span></td>{% endfor %}
{% for column in OPERATING %}
<td class="num" data-column="{{ column }}" data-value="{{ sort_value(row.get(column)) }}"><span class="v">{{
  number(row.get(column)) }}</span></td>{% endfor %}
</tr>
{% endfor %}
</tbody>
</table>
</div>
{% endfor %}
</section>

{% for key, title in EXTRA_SECTIONS.items() if key in view.sections %}
<section id="{{ key }}"><h2>{{ title }}</h2>{{ view.sections[key] }}</section>
{% endfor %}

<section id="plots">
<h2>Plots</h2>
<div class="plots">
{% for plot in view.plots %}
<figure data-plot="{{ plot.name }}">
{% if plot.present %}<img src="{{ url_for('plot_file', name=plot.name) }}" alt="{{ plot.title }}" loading="lazy">
{% else %}<p class="missing">No plot: <code>plots/{{ plot.name }}</code> is missing from the results folder.</p>
{% endif %}<figcaption>{{ plot.title }}</figcaption>
</figure>
{% else %}<p>None drawn: the run was given <code>--no-plots</code>.</p>
{% endfor %}
</div>
</section>

<section id="selection"><h2>Selection rule</h2>{{ view.sections['selection'] }}</section>

<section id="data"><h2>Data and splits</h2>{{ view.sections['data'] }}
<h3 id="skipped">Files left out: {{ view.skipped|length }}</h3>
{{ listing(view.skipped, 'skipped.csv') }}
<h3 id="leakage">Leakage warnings: {{ view.leakage|length }} file(s) whose bytes appear in two splits or under two
labels</h3>
{{ listing(view.leakage, 'leakage.csv') }}
</section>

<section id="provenance"><h2>Provenance</h2>
<ul>
<li>Generated {{ run.timestamp }} on {{ run.machine }}</li>
<li>cxr-bench git <code>{{ run.git }}</code></li>
<li>Command: <code>{{ run.command }}</code></li>
<li>Backbone forward passes: {{ run.forward_passes }}; heads trained this run: {{ run.heads_trained_this_run }};
failed grid points: {{ run.grid_points_failed }}</li>
</ul>
<div class="scroll" style="display: flex; gap: 40px; align-items: flex-start">
<table class="versions"><thead><tr><th>package</th><th>version</th></tr></thead><tbody>
{% for name, version in run.versions|dictsort %}<tr><td>{{ name }}</td><td>{{ version }}</td></tr>{% endfor %}
</tbody></table>
<table class="settings"><thead><tr><th>setting</th><th>value</th></tr></thead><tbody>
{% for name, value in display(run.config)|dictsort %}<tr><td>{{ name }}</td><td>{{ value }}</td></tr>
{% endfor %}</tbody></table>
</div>
<h3>The run's files</h3>
<p>{% for name in run_files %}<a href="{{ url_for('run_file', name=name) }}">{{ name }}</a>{{ ', ' if not loop.last }}
{% endfor %}</p>
</section>
{% endblock %}
{% block script %}
document.querySelectorAll("table.sortable").forEach((table) => {
  const headers = table.querySelectorAll("thead tr:last-child th");
  headers.forEach((th, index) => th.addEventListener("click", () => sortBy(table, headers, th, index)));
});
// First click: numbers highest first, text A to Z; a second click reverses. Missing values stay last.
function sortBy(table, headers, th, index) {
  const text = th.dataset.type === "text";
  const descending = th.dataset.order ? th.dataset.order === "asc" : !text;
  headers.forEach((other) => delete other.dataset.order);
  th.dataset.order = descending ? "desc" : "asc";
  const body = table.tBodies[0];
  const rows = Array.from(body.rows);
  rows.sort((a, b) => {
    const x = a.cells[index].dataset.value, y = b.cells[index].dataset.value;
    if (x === "" || y === "") return (x === "") - (y === "");
    const order = text ? x.localeCompare(y) : parseFloat(x) - parseFloat(y);
    return descending ? -order : order;
  });
  rows.forEach((row) => body.appendChild(row));
}
{% endblock %}
"""

LISTING = """{% macro listing(frame, name) %}
{% if frame|length %}
<div class="scroll"><table class="listing" data-file="{{ name }}"><thead><tr>
{% for column in frame.columns %}<th>{{ column }}</th>{% endfor %}</tr></thead><tbody>
{% for row in frame.head(MAX_LISTED).itertuples(index=False) %}<tr>
{% for value in row %}<td>{{ value }}</td>{% endfor %}</tr>{% endfor %}
</tbody></table></div>
{% if frame|length > MAX_LISTED %}<p>… and {{ frame|length - MAX_LISTED }} more: all in
<a href="{{ url_for('run_file', name=name) }}">{{ name }}</a>.</p>{% endif %}
{% else %}<p class="muted">None.</p>{% endif %}
{% endmacro %}"""

PREDICT = """{% extends "base.html" %}
{% block title %}One image's answer{% endblock %}
{% block main %}
<h1>One image's answer</h1>
<p>Drop one or several chest X-rays (PNG, JPEG, BMP or TIFF) below and pick the model: the page shows each class's
probability, the decision at the run's operating threshold and a heatmap of where the model looked, beside the
original. It runs the same code as <code>cxr-bench predict</code>, so the numbers are the same.</p>
<form id="predict-form">
<div id="drop" class="drop">Drop images here, or
<label>choose files: <input type="file" id="files" name="images" multiple
 accept="image/*,.jpeg,.jpg,.png,.bmp,.tif,.tiff"></label>
<div id="chosen" class="muted"></div></div>
<div class="controls">
<label>Model <select name="backbone" id="backbone">
{% for name in view.backbones %}<option value="{{ name }}"{{ ' selected' if name == service.default_backbone }}>{{
  name }}{{ ' (selected on validation)' if name == service.default_backbone }}</option>{% endfor %}
</select></label>
<label>Heatmap <select name="method" id="method">
<option value="auto" selected>auto: Grad-CAM, or occlusion where the last feature map is below 3x3</option>
<option value="gradcam">Grad-CAM</option><option value="occlusion">occlusion</option></select></label>
<button type="submit" id="submit">Predict</button>
</div>
</form>
<p class="muted" id="limits">At most {{ max_files }} images and {{ limit_mb }} MB per request. Each image gets the
run's own check (readable, shorter side at least {{ service.min_side }} px). What happens to an upload: it is
written to this server's temporary folder, read, and deleted as soon as its answer is made; its heatmap stays in
that folder (the last {{ keep }}) until the server stops, which removes the folder. Nothing is written to the
results folder, and nothing leaves this machine. One prediction runs at a time: a request sent meanwhile is
answered "busy, try again".</p>
<div id="status" role="status"></div>
<div id="model" class="meta"></div>
<div id="results"></div>
{% endblock %}
{% block script %}
const LIMIT = {{ limit_bytes }}, MAX_FILES = {{ max_files }}, API = {{ url_for("api_predict")|tojson }};
const form = document.getElementById("predict-form"), input = document.getElementById("files");
const drop = document.getElementById("drop"), statusBox = document.getElementById("status");
const results = document.getElementById("results"), modelBox = document.getElementById("model");
const METHOD_NAMES = {gradcam: "Grad-CAM", occlusion: "occlusion"};
let chosen = [];

function el(tag, attributes, ...children) {
  const node = document.createElement(tag);
  Object.entries(attributes || {}).forEach(([key, value]) => node.setAttribute(key, value));
  children.forEach((child) => node.append(child));  // text goes in as text, never as HTML
  return node;
}
function megabytes(bytes) {
  return bytes < 1048576 ? Math.ceil(bytes / 1024) + " KB" : (bytes / 1048576).toFixed(1) + " MB";
}
function setFiles(list) {
  chosen = Array.from(list);
  const total = chosen.reduce((sum, file) => sum + file.size, 0);
  document.getElementById("chosen").textContent = chosen.length
    ? `${chosen.length} file(s), ${megabytes(total)}: ${chosen.map((file) => file.name).join(", ")}` : "";
}
function showError(message) { statusBox.replaceChildren(el("p", {class: "error"}, message)); }

input.addEventListener("change", () => setFiles(input.files));
["dragenter", "dragover"].forEach((type) => drop.addEventListener(type, (event) => {
  event.preventDefault(); drop.classList.add("over"); }));
["dragleave", "drop"].forEach((type) => drop.addEventListener(type, (event) => {
  event.preventDefault(); drop.classList.remove("over"); }));
drop.addEventListener("drop", (event) => {
  input.files = event.dataTransfer.files;  // so the file field shows what was dropped
  setFiles(event.dataTransfer.files);
});

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  const total = chosen.reduce((sum, file) => sum + file.size, 0);
  // The server refuses these too; saying so here spares sending the bytes.
  if (!chosen.length) return showError("Choose or drop at least one image first.");
  if (chosen.length > MAX_FILES) return showError(`${chosen.length} images; at most ${MAX_FILES} per request.`);
  if (total > LIMIT) {
    return showError(`The upload is ${megabytes(total)}; the limit is ${megabytes(LIMIT)} per request.`);
  }
  const data = new FormData(form);
  data.delete("images");
  chosen.forEach((file) => data.append("images", file, file.name));
  const button = document.getElementById("submit");
  button.disabled = true;
  statusBox.replaceChildren(el("p", {}, "Predicting… (a model's first prediction builds its backbone: seconds)"));
  try {
    const response = await fetch(API, {method: "POST", body: data});
    const body = await response.json().catch(() => ({error: `the server answered HTTP ${response.status}`}));
    if (!body.images) return showError(body.error);
    statusBox.replaceChildren(body.error ? el("p", {class: "error"}, body.error) : "");
    render(body);
  } catch (error) {
    showError(`The server could not be reached (${error.message}); is cxr-bench serve still running?`);
  } finally {
    button.disabled = false;
  }
});

function render(body) {
  const model = body.model;
  const threshold = model.operating
    ? `; decision: ${model.operating.task} at threshold ${model.operating.threshold.toFixed(3)} (chosen on validation)`
    : "";
  modelBox.replaceChildren(`Model: ${model.description} (head ${model.head_id}); ` +
    `heatmap: ${METHOD_NAMES[model.method]} (last feature map ${model.feature_map})${threshold}.`);
  if (model.not_medical) modelBox.append(el("p", {class: "error"},
    "This run used random-init weights or phantom data: NOT a medical answer."));
  results.replaceChildren(...body.images.map((image, index) => card(image, chosen[index], model)));
}

function card(image, file, model) {
  const box = el("article", {class: "image-result", "data-name": image.name}, el("h3", {}, image.name));
  if (!image.ok) {
    box.classList.add("failed");
    box.append(el("p", {class: "error"}, `Not read: ${image.error}`));
    return box;
  }
  const original = el("figure", {}, el("img", {class: "original", alt: "original"}), el("figcaption", {}, "original"));
  if (file) original.querySelector("img").src = URL.createObjectURL(file);
  const heat = el("figure", {}, el("img", {class: "heatmap", src: image.heatmap, alt: "heatmap"}),
    el("figcaption", {}, `the model's ${model.image_size} px input and its ${METHOD_NAMES[model.method]} heatmap`));
  const rows = model.classes.map((name) => {
    const p = image.probabilities[name];
    return el("tr", {"data-class": name, class: name === image.predicted ? "top" : ""}, el("th", {}, name),
      el("td", {class: "p", "data-value": String(p)}, p.toFixed(3)),
      el("td", {class: "bars"}, el("div", {class: "bar", style: `width: ${(100 * p).toFixed(1)}%`})));
  });
  const table = el("table", {class: "probabilities"}, el("tbody", {}, ...rows));
  box.append(el("div", {class: "pair"}, original, heat, el("div", {}, el("p", {}, `Predicted: ${image.predicted}`),
    table, decision(image.decision))));
  return box;
}

function decision(made) {
  if (!made) return el("p", {class: "muted"}, "This run has no operating threshold.");
  const verdict = made.flagged ? "FLAGGED" : "not flagged";
  return el("p", {class: "decision" + (made.flagged ? " flagged" : "")},
    `${made.task}: P(${made.positive}) ${made.score.toFixed(3)} ${made.flagged ? "≥" : "<"} threshold ` +
    `${made.threshold.toFixed(3)} → ${verdict}`);
}
{% endblock %}
"""

ERROR = """{% extends "base.html" %}
{% block title %}{{ code }}{% endblock %}
{% block main %}<h1>{{ code }}: {{ name }}</h1><p class="error">{{ message }}</p>
<p><a href="{{ url_for('run_page') }}">Back to the run</a></p>{% endblock %}
"""

TEMPLATES = {"base.html": BASE, "run.html": RUN, "listing.html": LISTING, "predict.html": PREDICT, "error.html": ERROR}
